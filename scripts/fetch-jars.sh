#!/usr/bin/env bash
# Fetch the Java artifacts the bundle needs into the local cache, with Maven:
#
#   $OPTASIA_CACHE/hadoop-$HADOOP_VERSION/lib/*.jar       NameNode + DataNode runtime classpath
#   $OPTASIA_CACHE/hadoop-$HADOOP_VERSION/hdfs/webapps/   NameNode/DataNode web UI (put .../hdfs on the classpath)
#   $OPTASIA_CACHE/jars/postgresql-$POSTGRES_JDBC_VERSION.jar   PostgreSQL JDBC driver (Spark job)
#   $OPTASIA_CACHE/m2/                                    Maven local repository (download cache)
#
# OPTASIA_CACHE defaults to ${OPTASIA_HOME:-/opt/optasia}/cache. Versions come from
# versions.env at the repository root. A run that finds everything in place is
# instant and needs no network (a marker file per version says "complete").
#
# Usage:
#   scripts/fetch-jars.sh                 fetch if needed; progress on stderr, paths on stdout
#   scripts/fetch-jars.sh --print-paths   same, but stdout carries only KEY=VALUE lines
#                                         (eval-able: HADOOP_HOME_DIR, HADOOP_LIB, HADOOP_WEBAPPS,
#                                          HADOOP_CLASSPATH, POSTGRES_JDBC_JAR)
#   scripts/fetch-jars.sh --check         no network: exit 0 if everything is cached, 1 if not
#   scripts/fetch-jars.sh --offline ...   resolve from $OPTASIA_CACHE/m2 only (mvn -o)
#   scripts/fetch-jars.sh --force ...     re-resolve even if the markers exist
# Environment: OPTASIA_HOME, OPTASIA_CACHE, MVN (default: mvn), MAVEN_OPTS.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
VERSIONS_ENV="$REPO_ROOT/versions.env"
POM="$SCRIPT_DIR/maven/hadoop-server-pom.xml"

die() {
    printf 'fetch-jars: ERROR: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf 'fetch-jars:   %s\n' "$line" >&2; done
    exit 1
}
say() { [ "$QUIET" = 1 ] || printf 'fetch-jars: %s\n' "$*" >&2; }

MODE=fetch
QUIET=0
OFFLINE=0
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --print-paths) MODE=print ;;
        --check) MODE=check ;;
        --offline) OFFLINE=1 ;;
        --force) FORCE=1 ;;
        -q|--quiet) QUIET=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown argument: $arg" "run '$0 --help' for the options" ;;
    esac
done

[ -r "$VERSIONS_ENV" ] || die "cannot read $VERSIONS_ENV" "this script must stay in scripts/ of the bundle checkout"
# shellcheck source=../versions.env
. "$VERSIONS_ENV"
: "${HADOOP_VERSION:?HADOOP_VERSION missing in versions.env}"
: "${POSTGRES_JDBC_VERSION:?POSTGRES_JDBC_VERSION missing in versions.env}"

OPTASIA_CACHE="${OPTASIA_CACHE:-${OPTASIA_HOME:-/opt/optasia}/cache}"
HADOOP_DIR="$OPTASIA_CACHE/hadoop-$HADOOP_VERSION"
HADOOP_LIB="$HADOOP_DIR/lib"
HADOOP_WEBAPPS_ROOT="$HADOOP_DIR/hdfs"
HADOOP_MARKER="$HADOOP_DIR/.complete"
JDBC_JAR="$OPTASIA_CACHE/jars/postgresql-$POSTGRES_JDBC_VERSION.jar"
M2_REPO="$OPTASIA_CACHE/m2"
MVN="${MVN:-mvn}"

print_paths() {
    printf 'HADOOP_HOME_DIR=%s\n' "$HADOOP_DIR"
    printf 'HADOOP_LIB=%s\n' "$HADOOP_LIB"
    printf 'HADOOP_WEBAPPS=%s\n' "$HADOOP_WEBAPPS_ROOT/webapps"
    # Java expands "dir/*" itself; the webapps root must be a classpath entry for the web UI.
    printf 'HADOOP_CLASSPATH=%s\n' "$HADOOP_WEBAPPS_ROOT:$HADOOP_LIB/*"
    printf 'POSTGRES_JDBC_JAR=%s\n' "$JDBC_JAR"
}

hadoop_ok() { [ -f "$HADOOP_MARKER" ] && [ -d "$HADOOP_LIB" ] && [ -f "$HADOOP_WEBAPPS_ROOT/webapps/hdfs/dfshealth.html" ]; }
jdbc_ok() { [ -s "$JDBC_JAR" ]; }

if [ "$MODE" = check ]; then
    if hadoop_ok && jdbc_ok; then exit 0; fi
    hadoop_ok || echo "fetch-jars: missing: $HADOOP_DIR (run scripts/fetch-jars.sh)" >&2
    jdbc_ok || echo "fetch-jars: missing: $JDBC_JAR (run scripts/fetch-jars.sh)" >&2
    exit 1
fi
[ "$MODE" = print ] && QUIET=1

if [ "$FORCE" = 0 ] && hadoop_ok && jdbc_ok; then
    if [ "$MODE" = print ]; then print_paths; else
        say "cached: Hadoop $HADOOP_VERSION server jars and PostgreSQL JDBC $POSTGRES_JDBC_VERSION under $OPTASIA_CACHE"
        print_paths
    fi
    exit 0
fi

# --- something is missing: resolve with Maven --------------------------------
command -v "$MVN" >/dev/null 2>&1 || die "Maven ('$MVN') not found on PATH" \
    "install it (Debian: apt-get install -y maven) or set MVN=/path/to/mvn, then re-run $0"
command -v java >/dev/null 2>&1 || [ -n "${JAVA_HOME:-}" ] || die "no Java found (java on PATH or JAVA_HOME)" \
    "install a JDK 17 (Debian: apt-get install -y openjdk-17-jdk-headless), then re-run $0"
[ -r "$POM" ] || die "missing $POM" "restore it from the repository (git checkout -- scripts/maven)"

mkdir -p "$OPTASIA_CACHE" 2>/dev/null || die "cannot create $OPTASIA_CACHE" \
    "run as a user that may write there, or set OPTASIA_CACHE (or OPTASIA_HOME) to a writable directory"
[ -w "$OPTASIA_CACHE" ] || die "$OPTASIA_CACHE is not writable" \
    "run as a user that may write there, or set OPTASIA_CACHE (or OPTASIA_HOME) to a writable directory"

# One fetch at a time per cache (parallel test sessions, make -j).
exec 9>"$OPTASIA_CACHE/.fetch-jars.lock"
if ! flock -n 9; then
    say "another fetch is running on $OPTASIA_CACHE; waiting for it"
    flock 9
fi
# Re-check: the other fetch may have done the work.
if [ "$FORCE" = 0 ] && hadoop_ok && jdbc_ok; then
    if [ "$MODE" = print ]; then print_paths; else say "cached (fetched by a concurrent run)"; print_paths; fi
    exit 0
fi

WORK="$(mktemp -d "$OPTASIA_CACHE/.fetch-jars.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LOG="$WORK/mvn.log"

MVN_ARGS=(-B -q -Dstyle.color=never -f "$POM" "-Dmaven.repo.local=$M2_REPO" "-Dhadoop.version=$HADOOP_VERSION"
    "-Doptasia.build.dir=$WORK/target" "-Dmdep.markersDirectory=$WORK/markers")
[ "$OFFLINE" = 1 ] && MVN_ARGS+=(-o)

run_mvn() {
    local what="$1"; shift
    local t0=$SECONDS
    if ! "$MVN" "${MVN_ARGS[@]}" "$@" >>"$LOG" 2>&1; then
        printf 'fetch-jars: ---- last lines of the Maven output ----\n' >&2
        tail -n 30 "$LOG" | sed 's/\x1b\[[0-9;]*m//g' | awk '{print "fetch-jars:   | " $0}' >&2
        local hint="check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml or MAVEN_OPTS), then re-run $0"
        [ "$OFFLINE" = 1 ] && hint="--offline needs a previous online run to have filled $M2_REPO; run $0 without --offline"
        die "Maven failed while $what" "$hint"
    fi
    say "  done in $((SECONDS - t0)) s"
}

if [ "$FORCE" = 1 ] || ! hadoop_ok; then
    say "resolving Hadoop $HADOOP_VERSION server jars (hadoop-hdfs, hadoop-common + runtime deps) into $HADOOP_LIB"
    # Runtime scope only (no test/provided jars); macOS-native netty jars are dead weight on Linux.
    run_mvn "resolving the Hadoop $HADOOP_VERSION runtime classpath" dependency:copy-dependencies \
        -DincludeScope=runtime \
        -DexcludeClassifiers=osx-x86_64,osx-aarch_64 \
        -DoutputDirectory="$WORK/hadoop/lib"
    # The web UI (dfshealth.html, explorer, static js/css) is not in the main hadoop-hdfs
    # jar; Maven Central has it only in the hadoop-hdfs "tests" jar. Unpack webapps/ alone.
    say "unpacking the NameNode/DataNode web UI (webapps/) from hadoop-hdfs:$HADOOP_VERSION:tests"
    run_mvn "unpacking the HDFS web UI" dependency:unpack \
        -Dartifact="org.apache.hadoop:hadoop-hdfs:$HADOOP_VERSION:jar:tests" \
        -Dmdep.unpack.includes='webapps/**' \
        -DoutputDirectory="$WORK/hadoop/hdfs"
    [ -f "$WORK/hadoop/hdfs/webapps/hdfs/dfshealth.html" ] || die "the HDFS web UI files were not found in hadoop-hdfs-$HADOOP_VERSION-tests.jar" \
        "see $LOG; the layout of the Hadoop artifacts may have changed for this version"
    ls "$WORK/hadoop/lib/hadoop-hdfs-$HADOOP_VERSION.jar" "$WORK/hadoop/lib/hadoop-common-$HADOOP_VERSION.jar" >/dev/null 2>&1 \
        || die "hadoop-hdfs/hadoop-common $HADOOP_VERSION jars missing after resolution" "see the Maven output above"
    njars=$(find "$WORK/hadoop/lib" -name '*.jar' | wc -l)
    printf 'hadoop_version=%s\njars=%s\nfetched=%s\n' "$HADOOP_VERSION" "$njars" "$(date -u +%FT%TZ)" >"$WORK/hadoop/.complete"
    rm -rf "$HADOOP_DIR"
    mv "$WORK/hadoop" "$HADOOP_DIR"
    say "  $njars jars, $(du -sh "$HADOOP_LIB" | cut -f1) in $HADOOP_LIB"
fi

if [ "$FORCE" = 1 ] || ! jdbc_ok; then
    say "resolving PostgreSQL JDBC driver org.postgresql:postgresql:$POSTGRES_JDBC_VERSION"
    run_mvn "resolving org.postgresql:postgresql:$POSTGRES_JDBC_VERSION" dependency:copy \
        -Dartifact="org.postgresql:postgresql:$POSTGRES_JDBC_VERSION" \
        -DoutputDirectory="$WORK/jars"
    [ -s "$WORK/jars/postgresql-$POSTGRES_JDBC_VERSION.jar" ] || die "postgresql-$POSTGRES_JDBC_VERSION.jar missing after resolution" "see the Maven output above"
    mkdir -p "$OPTASIA_CACHE/jars"
    mv -f "$WORK/jars/postgresql-$POSTGRES_JDBC_VERSION.jar" "$JDBC_JAR"
    say "  $JDBC_JAR"
fi

if [ "$MODE" = print ]; then print_paths; else say "complete"; print_paths; fi
