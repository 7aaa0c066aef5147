"""The real test services work: PostgreSQL, HDFS, and Spark against both.

The services are conftest's session fixtures ``pg``/``hdfs``/``spark_hdfs``,
shared with every integration test (one server and one cluster per run).
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
import uuid

import pytest

from tests.services.hdfs import HdfsCommandError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def postgres_server(pg):
    return pg


@pytest.fixture(scope="session")
def hdfs_cluster(hdfs):
    return hdfs


@pytest.fixture(scope="session")
def spark_session(spark_hdfs):
    return spark_hdfs


# --------------------------------------------------------------- PostgreSQL
def test_postgres_table_round_trip(postgres_server):
    with postgres_server.connect() as conn:
        conn.execute("CREATE TABLE subscriber (id bigint PRIMARY KEY, msisdn text NOT NULL, joined date)")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO subscriber VALUES (%s, %s, %s)",
                [(1, "254700000001", dt.date(2025, 1, 2)), (2, "254700000002", None)],
            )
        conn.commit()

    with postgres_server.connect() as conn:
        rows = conn.execute("SELECT id, msisdn, joined FROM subscriber ORDER BY id").fetchall()
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'subscriber'"
        ).fetchone()[0]
    assert rows == [(1, "254700000001", dt.date(2025, 1, 2)), (2, "254700000002", None)]
    assert owner == postgres_server.user


def test_postgres_requires_the_password_over_tcp(postgres_server):
    import psycopg

    assert postgres_server.jdbc_url == (
        f"jdbc:postgresql://127.0.0.1:{postgres_server.port}/{postgres_server.dbname}"
    )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1", port=postgres_server.port, dbname=postgres_server.dbname,
            user=postgres_server.user, password=postgres_server.password + "x",
        )
    with psycopg.connect(postgres_server.dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == postgres_server.user


# --------------------------------------------------------------------- HDFS
def test_hdfs_shell_round_trip(hdfs_cluster, tmp_path):
    base = f"/it/{uuid.uuid4().hex}"
    payload = "id,msisdn\n1,254700000001\n2,254700000002\n"
    local = tmp_path / "subscribers.csv"
    local.write_text(payload)

    hdfs_cluster.dfs("-mkdir", "-p", f"{base}/landing")
    hdfs_cluster.dfs("-put", str(local), f"{base}/landing/subscribers.csv")

    listing = hdfs_cluster.dfs("-ls", f"{base}/landing")
    assert f"{base}/landing/subscribers.csv" in listing
    line = next(ln for ln in listing.splitlines() if ln.endswith("subscribers.csv"))
    assert line.split()[4] == str(len(payload.encode()))  # size column
    assert line.split()[1] == "1"  # replication factor

    assert hdfs_cluster.dfs("-cat", f"{hdfs_cluster.uri}{base}/landing/subscribers.csv") == payload
    # A missing path is a real error, with the shell's message.
    with pytest.raises(HdfsCommandError, match="No such file or directory"):
        hdfs_cluster.dfs("-cat", f"{base}/landing/missing.csv")
    # The JVM-free WebHDFS helpers see the same file.
    assert hdfs_cluster.read_bytes(f"{base}/landing/subscribers.csv") == payload.encode()
    assert not hdfs_cluster.exists(f"{base}/landing/missing.csv")


def test_hdfs_permissions_are_enforced(hdfs_cluster):
    # Permissions are on; the test process is the HDFS superuser, others are not.
    base = f"/it/{uuid.uuid4().hex}"
    hdfs_cluster.write_bytes(f"{base}/owned/data.txt", b"x")
    hdfs_cluster.client().client.set_permission(f"{base}/owned", "755")
    with pytest.raises(OSError, match="Permission denied: user=alice"):
        hdfs_cluster.client("alice").mkdirs(f"{base}/owned/sub")
    with pytest.raises(HdfsCommandError, match="Permission denied: user=alice"):
        hdfs_cluster.dfs("-mkdir", f"{base}/owned/sub2", user="alice")
    [status] = hdfs_cluster.list_status(f"{base}/owned")
    assert (status["pathSuffix"], status["owner"], status["length"]) == ("data.txt", hdfs_cluster.user, 1)


def test_hdfs_namenode_reports_live_datanode_and_ui(hdfs_cluster):
    state = hdfs_cluster.namesystem_state()
    assert state["NumLiveDataNodes"] == 1
    assert state["NumDeadDataNodes"] == 0
    assert not hdfs_cluster.in_safe_mode()
    assert hdfs_cluster.uri.startswith("hdfs://127.0.0.1:")
    # The NameNode web UI (a product feature) is served, not just JMX.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{hdfs_cluster.http_url}/dfshealth.html", timeout=10) as resp:
        assert resp.status == 200
        assert b"Namenode information" in resp.read()
    with opener.open(f"{hdfs_cluster.http_url}/webhdfs/v1/?op=GETFILESTATUS", timeout=10) as resp:
        assert json.load(resp)["FileStatus"]["type"] == "DIRECTORY"


# -------------------------------------------------------------------- Spark
def test_spark_parquet_on_hdfs_round_trip(spark_session, hdfs_cluster):
    spark = spark_session
    from pyspark.sql import Row

    rows = [
        Row(id=1, msisdn="254700000001", amount=10.5, ts=dt.datetime(2025, 1, 2, 3, 4, 5)),
        Row(id=2, msisdn="254700000002", amount=-3.25, ts=dt.datetime(2025, 6, 30, 23, 59, 59)),
        Row(id=3, msisdn=None, amount=0.0, ts=None),
    ]
    path = f"{hdfs_cluster.uri}/tmp/x"
    spark.createDataFrame(rows).write.mode("overwrite").parquet(path)

    back = spark.read.parquet(path).orderBy("id").collect()
    assert [r.asDict() for r in back] == [r.asDict() for r in rows]
    # The files really are in HDFS (listed by the NameNode, not a local path).
    listing = hdfs_cluster.dfs("-ls", "/tmp/x")
    assert "/tmp/x/_SUCCESS" in listing
    assert ".parquet" in listing


def test_spark_jdbc_round_trip(spark_session, postgres_server):
    spark = spark_session
    df = spark.createDataFrame(
        [(1, "254700000001", 10.5), (2, "254700000002", -3.25)],
        "id INT, msisdn STRING, amount DOUBLE",
    )
    df.write.jdbc(postgres_server.jdbc_url, "spark_txn", mode="overwrite",
                  properties=postgres_server.jdbc_properties)

    # PostgreSQL itself sees what Spark wrote ...
    with postgres_server.connect() as conn:
        got = conn.execute("SELECT id, msisdn, amount FROM spark_txn ORDER BY id").fetchall()
    assert got == [(1, "254700000001", 10.5), (2, "254700000002", -3.25)]

    # ... and Spark reads it back through JDBC.
    back = spark.read.jdbc(postgres_server.jdbc_url, "spark_txn",
                           properties=postgres_server.jdbc_properties)
    assert sorted(tuple(r) for r in back.collect()) == [(1, "254700000001", 10.5), (2, "254700000002", -3.25)]
