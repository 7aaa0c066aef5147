#!/usr/bin/env bash
# Build the bundle's own Docker images offline from the host cache:
#
#   optasia/postgres:<POSTGRES_MAJOR>-<inputs>   from roles/postgres/files
#   optasia/hadoop:<HADOOP_VERSION>-<inputs>     from roles/hadoop/files + the cached
#                                                Hadoop jars and web UI (scripts/fetch-jars.sh)
#   optasia/airflow:<AIRFLOW_VERSION>-<inputs>   (target airflow) from roles/airflow/files/airflow
#                                                + the cached wheels of its lock (scripts/fetch-wheels.sh);
#                                                AIRFLOW_VERSION = apache-airflow in that lock
#   optasia/spark-job:<JOB_VERSION>-<inputs>     (target sparkjob) from roles/airflow/files/spark-job
#                                                + a copy of spark_jobs/, the cached wheels of its lock
#                                                and the PostgreSQL JDBC jar (scripts/fetch-jars.sh);
#                                                JOB_VERSION = the version in pyproject.toml
#
# each also tagged :<POSTGRES_MAJOR> / :<HADOOP_VERSION> / :<AIRFLOW_VERSION> /
# :<JOB_VERSION> and :latest. <inputs> is
# the first 12 hex digits of a SHA-256 over the staged build context (every
# file's path, mode and content), the base image's layers and the build
# arguments; the image carries it whole as LABEL optasia.inputs-hash. An image
# is built only when no image with that label exists, so a rerun is instant.
#
# Build contexts are staged under $OPTASIA_HOME/build/<image>/. The base image
# comes from scripts/build-base-image.sh (pull, cached tarball or debootstrap).
# Nothing is downloaded during a build except Debian packages over plain http
# from the mirror in the base image's apt sources.
#
# EXTRA_CA_CERTIFICATES=/path/bundle.pem   (optional) PEM bundle of extra CA
#   certificates added to both images' trust store (/etc/ssl/certs and, for
#   hadoop, Java's cacerts) -- for sites behind a TLS-intercepting proxy. Part of
#   the inputs hash: changing the bundle rebuilds the images.
#
# Usage: scripts/build-images.sh [postgres|hadoop|airflow|sparkjob|all]...   (default: all)
# Output: progress on stderr; on stdout one final line per image:
#   image optasia/hadoop:3.4.2-0123456789ab built
#   image optasia/postgres:15-0123456789ab up to date
# Environment: OPTASIA_HOME (/opt/optasia), OPTASIA_CACHE ($OPTASIA_HOME/cache),
#   EXTRA_CA_CERTIFICATES, IMAGE_PREFIX (optasia), OPTASIA_KEEP_OLD_IMAGES=1 (do
#   not remove the previous build's tags), http_proxy/https_proxy/no_proxy
#   (passed on to the build), DOCKER_BUILDKIT (default 0 unless buildx is installed).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OPTASIA_HOME="${OPTASIA_HOME:-/opt/optasia}"
OPTASIA_CACHE="${OPTASIA_CACHE:-$OPTASIA_HOME/cache}"
export OPTASIA_HOME OPTASIA_CACHE
IMAGE_PREFIX="${IMAGE_PREFIX:-optasia}"
BASE_IMAGE=debian:bookworm-slim
BUILD_ROOT="$OPTASIA_HOME/build"

say() { printf 'build-images: %s\n' "$*" >&2; }
die() {
    printf 'build-images: ERROR: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf 'build-images:   %s\n' "$line" >&2; done
    exit 1
}

IMAGES=()
for arg in "$@"; do
    case "$arg" in
        all) IMAGES+=(postgres hadoop airflow sparkjob) ;;
        postgres|hadoop|airflow|sparkjob) IMAGES+=("$arg") ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown image: $arg" "images: postgres, hadoop, airflow, sparkjob, all" ;;
    esac
done
[ "${#IMAGES[@]}" -gt 0 ] || IMAGES=(postgres hadoop airflow sparkjob)

# shellcheck source=../versions.env
. "$REPO_ROOT/versions.env"
: "${HADOOP_VERSION:?HADOOP_VERSION missing in versions.env}"
: "${POSTGRES_MAJOR:?POSTGRES_MAJOR missing in versions.env}"
: "${JAVA_MAJOR:?JAVA_MAJOR missing in versions.env}"
: "${POSTGRES_JDBC_VERSION:?POSTGRES_JDBC_VERSION missing in versions.env}"

# Image name and source folder per target (postgres/hadoop: roles/<image>/files).
image_repo() { case "$1" in sparkjob) echo spark-job ;; *) echo "$1" ;; esac; }
image_src() {
    case "$1" in
        airflow) echo "$REPO_ROOT/roles/airflow/files/airflow" ;;
        sparkjob) echo "$REPO_ROOT/roles/airflow/files/spark-job" ;;
        *) echo "$REPO_ROOT/roles/$1/files" ;;
    esac
}

if [ -z "${DOCKER_BUILDKIT:-}" ]; then
    if docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=1; else export DOCKER_BUILDKIT=0; fi
fi

if [ -n "${EXTRA_CA_CERTIFICATES:-}" ]; then
    [ -r "$EXTRA_CA_CERTIFICATES" ] || die "EXTRA_CA_CERTIFICATES=$EXTRA_CA_CERTIFICATES is not a readable file" \
        "point it at a PEM bundle (-----BEGIN CERTIFICATE----- blocks), or unset it"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$EXTRA_CA_CERTIFICATES" \
        || die "EXTRA_CA_CERTIFICATES=$EXTRA_CA_CERTIFICATES holds no PEM certificate" \
               "convert it first, e.g.: openssl x509 -inform der -in ca.cer -out ca.pem"
fi

# --- base image ---------------------------------------------------------------
bash "$SCRIPT_DIR/build-base-image.sh" \
    || die "the base image $BASE_IMAGE is not available (see above)"
# Its content identity (layer digests): stable across re-imports of the same tarball.
BASE_ID="$(docker image inspect -f '{{json .RootFS.Layers}}' "$BASE_IMAGE")"

# --- staging ------------------------------------------------------------------
# Split a PEM bundle into one *.crt per certificate (update-ca-certificates and
# Java's keystore hook take the first certificate of a file only).
stage_extra_ca() {  # dest_dir
    local dest="$1"
    mkdir -p "$dest"
    [ -n "${EXTRA_CA_CERTIFICATES:-}" ] || return 0
    awk -v dir="$dest" '
        /-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/optasia-extra-%02d.crt", dir, n); inside = 1 }
        inside { print > f }
        /-----END CERTIFICATE-----/ { inside = 0; close(f) }
    ' "$EXTRA_CA_CERTIFICATES"
    say "added $(find "$dest" -name '*.crt' | wc -l) extra CA certificate(s) from $EXTRA_CA_CERTIFICATES"
}

# Hard links from the cache where possible (same filesystem), else copies.
link_or_copy() {  # src... dest_dir
    cp -l "$@" 2>/dev/null || cp "$@"
}

# The locked wheels (scripts/fetch-wheels.sh fills the cache when needed).
stage_wheels() {  # target dest_dir
    local target="$1" dest="$2" out dir f
    local -a files=()
    out="$(bash "$SCRIPT_DIR/fetch-wheels.sh" "$target")" \
        || die "[$target] the Python wheels are not cached and could not be fetched (see above)" \
               "run 'bash scripts/fetch-wheels.sh $target' on a host that reaches PyPI, then rerun"
    dir="$(sed -n "s/^WHEELS_${target^^}=//p" <<<"$out")"
    [ -f "$dir/requirements.txt" ] || die "[$target] $dir has no requirements.txt" \
        "the wheel cache looks incomplete: run 'bash scripts/fetch-wheels.sh --force $target'"
    mkdir -p "$dest"
    while read -r f; do files+=("$dir/$f"); done < <(sed -n 's/.*# file: //p' "$dir/requirements.txt")
    link_or_copy "${files[@]}" "$dir/requirements.txt" "$dest/"
}

stage() {  # image -> prints the staged context dir
    local image="$1" src ctx tmp
    src="$(image_src "$1")"
    ctx="$BUILD_ROOT/$(image_repo "$1")"
    [ -f "$src/Dockerfile" ] || die "$src/Dockerfile is missing" "this script must stay in scripts/ of the bundle checkout"
    mkdir -p "$BUILD_ROOT"
    tmp="$(mktemp -d "$BUILD_ROOT/.$image.XXXXXX")"
    cp -a "$src/." "$tmp/"
    rm -rf "$tmp/extra-ca"
    stage_extra_ca "$tmp/extra-ca"
    cp -a "$src/extra-ca/README" "$tmp/extra-ca/" 2>/dev/null || true
    if [ "$image" = hadoop ]; then
        local paths lib webapps
        paths="$(bash "$SCRIPT_DIR/fetch-jars.sh" --print-paths)" \
            || die "the Hadoop jars are not cached and could not be fetched (see above)" \
                   "run 'bash scripts/fetch-jars.sh' on a host that reaches Maven Central, then rerun"
        lib="$(sed -n 's/^HADOOP_LIB=//p' <<<"$paths")"
        webapps="$(sed -n 's/^HADOOP_WEBAPPS=//p' <<<"$paths")"
        [ -f "$lib/hadoop-hdfs-$HADOOP_VERSION.jar" ] || die "$lib has no hadoop-hdfs-$HADOOP_VERSION.jar" \
            "the jar cache looks incomplete: run 'bash scripts/fetch-jars.sh --force'"
        [ -f "$webapps/hdfs/dfshealth.html" ] || die "$webapps has no HDFS web UI" \
            "the jar cache looks incomplete: run 'bash scripts/fetch-jars.sh --force'"
        # Same layout as the Ansible role stages: lib/*.jar and hdfs/webapps/.
        cp -a "$lib" "$tmp/lib"
        mkdir -p "$tmp/hdfs"
        cp -a "$webapps" "$tmp/hdfs/webapps"
    fi
    if [ "$image" = airflow ] || [ "$image" = sparkjob ]; then
        stage_wheels "$image" "$tmp/wheels"
    fi
    if [ "$image" = sparkjob ]; then
        local jar
        jar="$(bash "$SCRIPT_DIR/fetch-jars.sh" --print-paths | sed -n 's/^POSTGRES_JDBC_JAR=//p')" \
            || die "the PostgreSQL JDBC jar is not cached and could not be fetched (see above)" \
                   "run 'bash scripts/fetch-jars.sh' on a host that reaches Maven Central, then rerun"
        [ -s "$jar" ] || die "the PostgreSQL JDBC jar $jar is missing" "run 'bash scripts/fetch-jars.sh --force'"
        mkdir -p "$tmp/jars"
        link_or_copy "$jar" "$tmp/jars/postgresql.jar"
        # The job's code, without byte code (tests on the host must not change the inputs).
        cp -a "$REPO_ROOT/spark_jobs" "$tmp/spark_jobs"
        find "$tmp/spark_jobs" \( -name __pycache__ -o -name '*.pyc' -o -name '*.pyo' \) -prune -exec rm -rf {} +
    fi
    rm -rf "$ctx.old"
    [ -e "$ctx" ] && mv "$ctx" "$ctx.old"
    mv "$tmp" "$ctx"
    rm -rf "$ctx.old"
    printf '%s\n' "$ctx"
}

inputs_hash() {  # ctx build-args...
    local ctx="$1"; shift
    {
        printf 'base %s\n' "$BASE_ID"
        printf 'arg %s\n' "$@"
        (cd "$ctx" && find . \( -type f -o -type l -o -type d \) -printf '%y %m %p %l\n' | LC_ALL=C sort)
        (cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    } | sha256sum | cut -c1-64
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# --- build one ------------------------------------------------------------------
RESULTS=()
build_one() {
    local image="$1" ctx hash short version major repo tag existing t0 log state
    local -a args
    repo="$IMAGE_PREFIX/$(image_repo "$image")"
    case "$image" in
        postgres) major="$POSTGRES_MAJOR"; args=("PG_MAJOR=$POSTGRES_MAJOR") ;;
        hadoop)   major="$HADOOP_VERSION"; args=("HADOOP_VERSION=$HADOOP_VERSION" "JAVA_MAJOR=$JAVA_MAJOR") ;;
        airflow)
            major="$(sed -n 's/^apache-airflow==\([^ ]*\).*/\1/p' "$(image_src airflow)/requirements.lock")"
            [ -n "$major" ] || die "no apache-airflow pin in $(image_src airflow)/requirements.lock" \
                "re-resolve it: scripts/fetch-wheels.sh --lock airflow"
            args=() ;;
        sparkjob)
            major="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$REPO_ROOT/pyproject.toml" | head -n1)"
            [ -n "$major" ] || die "no version in $REPO_ROOT/pyproject.toml"
            args=("JAVA_MAJOR=$JAVA_MAJOR" "POSTGRES_JDBC_VERSION=$POSTGRES_JDBC_VERSION") ;;
    esac
    say "[$image] staging the build context ..."
    ctx="$(stage "$image")"
    hash="$(inputs_hash "$ctx" "${args[@]}")"
    short="${hash:0:12}"
    version="$major-$short"
    tag="$repo:$version"

    existing="$(docker images -q --no-trunc --filter "label=optasia.inputs-hash=$hash" | head -n1)"
    if [ -n "$existing" ]; then
        state="up to date"
        for t in "$tag" "$repo:$major" "$repo:latest"; do
            if [ "$(image_id "$t")" != "$existing" ]; then
                docker tag "$existing" "$t"
                state="built (re-tagged the existing image)"
            fi
        done
        say "[$image] an image with inputs $short exists: $state"
        RESULTS+=("image $tag $state")
        return 0
    fi

    local -a build_args=() proxy_args=()
    local a p
    for a in "${args[@]}"; do build_args+=(--build-arg "$a"); done
    for p in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -n "${!p:-}" ] && proxy_args+=(--build-arg "$p")
    done
    log="$BUILD_ROOT/$image.build.log"
    say "[$image] building $tag (inputs changed or first build; log: $log) ..."
    t0=$(date +%s)
    local attempt=1 ok=0
    while :; do
        if docker build --pull=false --rm --force-rm \
                --label "optasia.inputs-hash=$hash" \
                --label "optasia.image=$image" \
                --label "optasia.version=$version" \
                "${build_args[@]+"${build_args[@]}"}" "${proxy_args[@]+"${proxy_args[@]}"}" \
                -t "$tag" -t "$repo:$major" -t "$repo:latest" \
                "$ctx" 2>&1 | tee "$log" | sed -u -n "s/^\(Step [0-9]*\/[0-9]*\) : \(.\{0,100\}\).*/build-images: [$image] \1 \2/p" >&2; then
            ok=1; break
        fi
        # An intermediate image removed under the build (a concurrent `docker rmi`
        # or `docker image prune` on the same engine): one more try.
        if [ "$attempt" -lt 2 ] && grep -q -E 'unknown parent image ID|No such image: sha256' "$log"; then
            say "[$image] an intermediate image vanished during the build (concurrent prune/rmi on this engine?): building again"
            attempt=$((attempt + 1))
            continue
        fi
        break
    done
    if [ "$ok" != 1 ]; then
        tail -n 30 "$log" >&2
        die "[$image] docker build failed (last lines above; full log: $log)" \
            "apt failures: check that the base image reaches Debian's mirror over http:" \
            "  docker run --rm $BASE_IMAGE apt-get update" \
            "behind a proxy: export http_proxy=http://proxy:port (passed to the build); TLS interception: EXTRA_CA_CERTIFICATES=/path/ca.pem"
    fi
    say "[$image] built $tag in $(( $(date +%s) - t0 ))s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"

    # Drop the tags of earlier builds of this image (not forced: an image still
    # used by a container stays).
    if [ "${OPTASIA_KEEP_OLD_IMAGES:-0}" != 1 ]; then
        local old
        for old in $(docker images "$repo" --format '{{.Repository}}:{{.Tag}}' | grep -E ":$major-[0-9a-f]{12}\$" | grep -v -x -F "$tag" || true); do
            if docker rmi "$old" >/dev/null 2>&1; then say "[$image] removed the previous build's tag $old"; fi
        done
        # Multi-stage images (airflow, sparkjob) leave their build stage as an
        # untagged image labelled optasia.build-stage: the newest is the next
        # build's layer cache, older ones are dead weight.
        for old in $(docker images -q --filter dangling=true --filter "label=optasia.build-stage=$image" | tail -n +2); do
            if docker rmi "$old" >/dev/null 2>&1; then say "[$image] removed an older build stage ($old)"; fi
        done
    fi
    RESULTS+=("image $tag built")
}

mkdir -p "$BUILD_ROOT"
for image in "${IMAGES[@]}"; do
    # One run at a time per image (staging folder, tags, old-tag removal).
    exec 8>"$BUILD_ROOT/.$image.lock"
    if ! flock -n 8; then
        say "[$image] another build-images run is building this image; waiting for it"
        flock 8
    fi
    build_one "$image"
    exec 8>&-
done
printf '%s\n' "${RESULTS[@]}"
