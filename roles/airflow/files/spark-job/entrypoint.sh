#!/usr/bin/env bash
# Entrypoint of optasia/spark-job.
#
#   <image> run|stage|publish|abandon|db-init|status|--help ...  -> python -m spark_jobs <args>
#   <image> python|python3|bash|sh|spark-submit|pyspark|java|/abs/path ...  -> run as given
#
# Networking of Spark's driver: with a local master (no --master, or
# --master local[...]) everything binds to loopback -- SPARK_LOCAL_IP=127.0.0.1,
# SPARK_LOCAL_HOSTNAME=localhost unless set -- so the container's hostname need
# not resolve (--network host, odd hostnames). With a cluster master
# (--master spark://...) Spark's defaults stay: the driver advertises the
# container's hostname; set SPARK_LOCAL_IP (or --conf spark.driver.host) to an
# address the executors reach.
#
# Environment (read by the job): OPTASIA_DB_USER, OPTASIA_DB_PASSWORD_FILE or
# OPTASIA_DB_PASSWORD, OPTASIA_JDBC_JAR (set by the image); Spark: SPARK_LOCAL_IP,
# SPARK_LOCAL_HOSTNAME, SPARK_LOCAL_DIRS (scratch, default /tmp).
set -Eeuo pipefail

if [ "$#" -eq 0 ]; then
    set -- --help
fi
case "$1" in
    python|python3|bash|sh|spark-submit|pyspark|spark-shell|java|/*) exec "$@" ;;
esac

master=""
prev=""
for a in "$@"; do
    case "$a" in --master=*) master="${a#--master=}" ;; esac
    [ "$prev" = --master ] && master="$a"
    prev="$a"
done
case "${master:-local}" in
    local*)
        export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
        export SPARK_LOCAL_HOSTNAME="${SPARK_LOCAL_HOSTNAME:-localhost}"
        ;;
esac

# Hadoop's login needs a user name for the uid (docker run --user <uid without passwd entry>).
if ! id -un >/dev/null 2>&1; then
    echo "spark-job-entrypoint: WARNING: uid $(id -u) has no user name; Spark/Hadoop may fail to log in." \
         "Run as the image's user (spark, uid 185) or mount an /etc/passwd entry." >&2
fi

exec python -m spark_jobs "$@"
