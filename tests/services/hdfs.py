"""A real single-host HDFS cluster (one NameNode, one DataNode) for tests.

The daemons run from the jars that ``scripts/fetch-jars.sh`` caches (fetched on
first use), started with plain ``java -cp`` -- no Hadoop launcher scripts, no
HADOOP_HOME. Every port is a free one on 127.0.0.1; configuration lives in a
temporary HADOOP_CONF_DIR and data and logs in a temporary directory that
:meth:`HdfsCluster.stop` removes.

Permissions stay ON (``dfs.permissions.enabled=true``). The NameNode runs as
the OS user of the test process, and with simple authentication the HDFS
superuser is the user that started the NameNode: the test process, the
``dfs()`` shell and an in-process Spark client are therefore all superuser.
A test that wants to see a permission denial can act as another user with
``HADOOP_USER_NAME`` (``dfs(..., user="alice")``).

    with HdfsCluster() as hdfs:
        hdfs.dfs("-mkdir", "-p", "/landing")
        print(hdfs.uri)              # hdfs://127.0.0.1:PORT
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Mapping
from xml.sax.saxutils import escape

from . import ServiceError, jar_paths
from .ports import LOOPBACK, free_ports, port_is_open

# What Hadoop's own launcher adds on Java 17 (hadoop-functions.sh,
# hadoop_finalize_jpms_opts; HADOOP-19219, HADOOP-19310). Without them the
# daemons die with InaccessibleObjectException.
JPMS_OPTIONS: tuple[str, ...] = (
    "-XX:+IgnoreUnrecognizedVMOptions",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.math=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.zip=ALL-UNNAMED",
    "--add-opens=java.base/sun.security.util=ALL-UNNAMED",
    "--add-opens=java.base/sun.security.x509=ALL-UNNAMED",
)

# Short-lived client JVMs (FsShell): start fast, stay small.
CLIENT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Djava.net.preferIPv4Stack=true",
)

NAMENODE_CLASS = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE_CLASS = "org.apache.hadoop.hdfs.server.datanode.DataNode"
FSSHELL_CLASS = "org.apache.hadoop.fs.FsShell"
DFSADMIN_CLASS = "org.apache.hadoop.hdfs.tools.DFSAdmin"

_LOG4J = """\
# Written by tests/services/hdfs.py. Daemons: INFO to stderr (redirected to a
# file per daemon); shell commands pass -Dhadoop.root.logger=WARN,console.
hadoop.root.logger=INFO,console
log4j.rootLogger=${hadoop.root.logger}
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.org.apache.hadoop.metrics2=WARN
log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN
log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN
log4j.logger.BlockStateChange=WARN
"""


class HdfsCommandError(ServiceError):
    """An HDFS shell command exited non-zero."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str,
                 command: str = "hdfs dfs"):
        self.command = [*command.split(), *args]
        self.returncode = returncode  # exit code, or the HTTP status for WebHDFS
        self.stdout = stdout
        self.stderr = stderr
        what = "HTTP" if command == "webhdfs" else "exit"
        super().__init__(
            f"{' '.join(self.command)} failed ({what} {returncode}):\n{stderr.strip() or stdout.strip()}"
        )


def _site_xml(props: Mapping[str, Any]) -> str:
    lines = ['<?xml version="1.0"?>', "<!-- written by tests/services/hdfs.py -->", "<configuration>"]
    for k, v in props.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        lines.append(f"  <property><name>{escape(k)}</name><value>{escape(str(v))}</value></property>")
    lines.append("</configuration>\n")
    return "\n".join(lines)


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
        return os.path.join(java_home, "bin", "java")
    java = shutil.which("java")
    if not java:
        raise ServiceError("no java found (set JAVA_HOME or put a JDK 17 'java' on PATH)")
    return java


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


class HdfsCluster:
    """One NameNode + one DataNode on 127.0.0.1, in a temp dir, on free ports.

    Constructor arguments (all optional, keyword-only):
      base_dir          parent of the temp dir (default: tempfile.gettempdir())
      namenode_heap_mb  NameNode -Xmx (default 384)
      datanode_heap_mb  DataNode -Xmx (default 256)
      startup_timeout   seconds to wait for a usable cluster (default 120)
      extra_conf        extra hdfs-site.xml properties (override the defaults)
      keep_dir          keep the temp dir after stop() (for debugging; also
                        env OPTASIA_KEEP_TEST_DIRS=1)

    Attributes after start(): uri, http_url, host, rpc_port, http_port,
    datanode_ports (dict), conf_dir, work_dir, log_dir, namenode_log,
    datanode_log, classpath, user (HDFS superuser = OS user), client_conf,
    spark_conf.
    """

    host = LOOPBACK

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike | None = None,
        namenode_heap_mb: int = 384,
        datanode_heap_mb: int = 256,
        startup_timeout: float = 120.0,
        extra_conf: Mapping[str, Any] | None = None,
        keep_dir: bool | None = None,
    ) -> None:
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.gettempdir())
        self.namenode_heap_mb = namenode_heap_mb
        self.datanode_heap_mb = datanode_heap_mb
        self.startup_timeout = startup_timeout
        self.extra_conf = dict(extra_conf or {})
        self.keep_dir = keep_dir if keep_dir is not None else os.environ.get("OPTASIA_KEEP_TEST_DIRS") == "1"
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.java = _find_java()

        self.work_dir: Path | None = None
        self.conf_dir: Path | None = None
        self.log_dir: Path | None = None
        self.rpc_port = 0
        self.http_port = 0
        self.datanode_ports: dict[str, int] = {}
        self.classpath = ""
        self._nn: subprocess.Popen | None = None
        self._dn: subprocess.Popen | None = None
        self._formatted = False
        self.startup_seconds: float | None = None

    # ------------------------------------------------------------------ paths
    @property
    def uri(self) -> str:
        """fs.defaultFS, e.g. ``hdfs://127.0.0.1:40123``."""
        return f"hdfs://{self.host}:{self.rpc_port}"

    @property
    def http_url(self) -> str:
        """NameNode web UI / JMX / WebHDFS base, e.g. ``http://127.0.0.1:40124``."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def namenode_log(self) -> Path:
        return self.log_dir / "namenode.log"

    @property
    def datanode_log(self) -> Path:
        return self.log_dir / "datanode.log"

    @property
    def client_conf(self) -> dict[str, str]:
        """Hadoop client settings for this cluster (e.g. for a Spark session)."""
        return {
            "fs.defaultFS": self.uri,
            "dfs.replication": "1",
            # One DataNode: a failed pipeline has no replacement node to add.
            "dfs.client.block.write.replace-datanode-on-failure.enable": "false",
            "dfs.client.use.datanode.hostname": "false",
        }

    @property
    def spark_conf(self) -> dict[str, str]:
        """``client_conf`` as ``spark.hadoop.*`` options for SparkSession.builder."""
        return {f"spark.hadoop.{k}": v for k, v in self.client_conf.items()}

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "HdfsCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "HdfsCluster":
        """Format (once) and start NameNode + DataNode; return when HDFS is writable."""
        if self._nn is not None:
            return self
        t0 = time.monotonic()
        self._formatted = False
        paths = jar_paths()
        self.classpath = paths["HADOOP_CLASSPATH"]
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir = Path(tempfile.mkdtemp(prefix="optasia-hdfs-", dir=self.base_dir))
        self.conf_dir = self.work_dir / "conf"
        self.log_dir = self.work_dir / "logs"
        for d in (self.conf_dir, self.log_dir, self.work_dir / "name", self.work_dir / "data"):
            d.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            last_error: Exception | None = None
            for _attempt in range(3):
                self._allocate_ports()
                self._write_config()
                try:
                    # The DataNode JVM boots while the NameNode is formatted and
                    # starts; it keeps retrying the NameNode RPC port meanwhile.
                    self._start_datanode_process()
                    if not self._formatted:
                        self._format()
                    self._start_namenode()
                    self.wait_ready(self.startup_timeout)
                    break
                except _PortClash as e:  # someone took a port between probe and bind
                    last_error = e
                    self._kill_daemons()
                    continue
            else:
                raise ServiceError(f"HDFS could not bind its ports after 3 attempts: {last_error}")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop both daemons and remove the temp dir (unless keep_dir)."""
        self._kill_daemons()
        atexit.unregister(self.stop)
        if self.work_dir is not None and self.work_dir.exists() and not self.keep_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # ----------------------------------------------------- failure injection
    def stop_datanode(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop the DataNode (SIGTERM, or SIGKILL with kill=True). The NameNode
        notices only after its heartbeat expiry (about 14 s here); use
        :meth:`wait_live_datanodes` (0) to wait for that."""
        self._dn = self._terminate(self._dn, kill=kill, timeout=timeout)

    def start_datanode(self, *, wait: bool = True, timeout: float = 60.0) -> None:
        """(Re)start the DataNode on the same ports and data dir; with wait=True
        return once it has re-registered with the NameNode and sent a heartbeat."""
        if self._dn is not None and self._dn.poll() is None:
            return
        self._start_datanode_process()
        if wait:
            self._wait_datanode_registered(timeout)

    @property
    def datanode_running(self) -> bool:
        return self._dn is not None and self._dn.poll() is None

    @property
    def namenode_running(self) -> bool:
        return self._nn is not None and self._nn.poll() is None

    # ---------------------------------------------------------------- client
    def dfs_run(
        self,
        *args: str,
        input: bytes | str | None = None,
        user: str | None = None,
        timeout: float = 120.0,
        main_class: str = FSSHELL_CLASS,
    ) -> subprocess.CompletedProcess:
        """Run ``hdfs dfs ARGS`` (FsShell) against this cluster; no exit check."""
        if self.conf_dir is None:
            raise ServiceError("HdfsCluster is not started")
        cmd = [
            self.java, *JPMS_OPTIONS, *CLIENT_JVM_OPTIONS,
            "-Dhadoop.root.logger=WARN,console",
            f"-Dhadoop.home.dir={self.work_dir}",
            "-cp", f"{self.conf_dir}:{self.classpath}",
            main_class, *args,
        ]
        env = os.environ.copy()
        env.pop("HADOOP_USER_NAME", None)
        if user:
            env["HADOOP_USER_NAME"] = user
        if isinstance(input, str):
            input = input.encode()
        proc = subprocess.run(
            cmd, input=input, capture_output=True, timeout=timeout, env=env,
            cwd=self.work_dir, stdin=None if input is not None else subprocess.DEVNULL,
        )
        return subprocess.CompletedProcess(
            list(args), proc.returncode,
            proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
        )

    def dfs(self, *args: str, input: bytes | str | None = None, user: str | None = None,
            timeout: float = 120.0) -> str:
        """Run ``hdfs dfs ARGS`` and return its stdout; raise HdfsCommandError
        (with stderr) on a non-zero exit. Paths may be absolute (``/x``) or full
        URIs. ``input`` feeds stdin (``dfs("-put", "-", "/f", input=b"...")``)."""
        proc = self.dfs_run(*args, input=input, user=user, timeout=timeout)
        if proc.returncode != 0:
            raise HdfsCommandError(list(args), proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def dfsadmin(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``hdfs dfsadmin ARGS`` (e.g. ``-report``) and return stdout."""
        proc = self.dfs_run(*args, timeout=timeout, main_class=DFSADMIN_CLASS)
        if proc.returncode != 0:
            raise HdfsCommandError(list(args), proc.returncode, proc.stdout, proc.stderr, command="hdfs dfsadmin")
        return proc.stdout

    # ------------------------------------------------- WebHDFS (no JVM, fast)
    def client(self, user: str | None = None):
        """The product's WebHDFS client (spark_jobs/webhdfs.py, what the DAG's
        tasks use) on this cluster, as ``user`` (default: the superuser)."""
        from spark_jobs.webhdfs import WebHdfs

        return WebHdfs(self.http_url, user or self.user, timeout=30)

    def exists(self, path: str) -> bool:
        return self.client().exists(path)

    def list_status(self, path: str) -> list[dict]:
        """FileStatus dicts (pathSuffix, type, length, owner, permission, ...) of a directory."""
        return self.client().list(path)

    def read_bytes(self, path: str) -> bytes:
        return self.client().read(path)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Create ``path`` (parents included) with ``data``."""
        self.client().write(path, data)

    # ------------------------------------------------------------ NameNode JMX
    def jmx(self, query: str, *, timeout: float = 2.0) -> dict:
        """First bean of ``/jmx?qry=QUERY`` on the NameNode, as a dict."""
        url = f"{self.http_url}/jmx?qry={query}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=timeout) as resp:
            beans = json.load(resp).get("beans", [])
        if not beans:
            raise ServiceError(f"no JMX bean {query} at {url}")
        return beans[0]

    def namesystem_state(self) -> dict:
        """The NameNode's FSNamesystemState bean (NumLiveDataNodes, CapacityRemaining, ...)."""
        return self.jmx("Hadoop:service=NameNode,name=FSNamesystemState")

    def live_datanodes(self) -> int:
        return int(self.namesystem_state()["NumLiveDataNodes"])

    def in_safe_mode(self) -> bool:
        info = self.jmx("Hadoop:service=NameNode,name=NameNodeInfo")
        return bool(info.get("Safemode"))

    def wait_live_datanodes(self, count: int, timeout: float = 60.0) -> None:
        """Wait until the NameNode reports exactly ``count`` live DataNodes."""
        deadline = time.monotonic() + timeout
        n = None
        while time.monotonic() < deadline:
            try:
                n = self.live_datanodes()
                if n == count:
                    return
            except (OSError, ServiceError, ValueError):
                pass
            time.sleep(0.25)
        raise ServiceError(f"NameNode still reports {n} live DataNodes after {timeout:.0f}s (wanted {count})")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until the NameNode is out of safe mode and a live DataNode has
        reported capacity (i.e. a write can be placed)."""
        deadline = time.monotonic() + timeout
        status = "NameNode web server not up yet"
        while True:
            self._check_alive()
            try:
                state = self.namesystem_state()
                live = int(state.get("NumLiveDataNodes", 0))
                remaining = int(state.get("CapacityRemaining", 0))
                safe = self.in_safe_mode()
                status = f"live DataNodes={live}, capacity remaining={remaining}, safe mode={safe}"
                if live >= 1 and remaining > 0 and not safe:
                    return
            except (OSError, ServiceError, ValueError, KeyError) as e:
                status = f"NameNode JMX not answering yet ({e})"
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"HDFS not ready after {timeout:.0f}s: {status}\n" + self.logs_tail()
                )
            time.sleep(0.2)

    def logs_tail(self, lines: int = 40) -> str:
        return (
            f"--- {self.namenode_log} (last {lines} lines) ---\n{_tail(self.namenode_log, lines)}\n"
            f"--- {self.datanode_log} (last {lines} lines) ---\n{_tail(self.datanode_log, lines)}"
        )

    # ------------------------------------------------------------- internals
    def _allocate_ports(self) -> None:
        (self.rpc_port, self.http_port, https, dn_xfer, dn_ipc, dn_http, dn_https) = free_ports(7)
        self._nn_https_port = https
        self.datanode_ports = {"data": dn_xfer, "ipc": dn_ipc, "http": dn_http, "https": dn_https}

    def _write_config(self) -> None:
        h = self.host
        core = {
            "fs.defaultFS": self.uri,
            "hadoop.tmp.dir": str(self.work_dir / "tmp"),
            "hadoop.security.authentication": "simple",
            # The web UI acts as this user for file browsing.
            "hadoop.http.staticuser.user": self.user,
            # Daemons and shell retry a not-yet-listening RPC port every 250 ms (default 1 s).
            "ipc.client.connect.retry.interval": 250,
        }
        hdfs = {
            "dfs.namenode.name.dir": str(self.work_dir / "name"),
            "dfs.datanode.data.dir": str(self.work_dir / "data"),
            "dfs.replication": 1,
            "dfs.permissions.enabled": True,
            "dfs.permissions.superusergroup": "supergroup",
            # Every address on 127.0.0.1 and a free port: no 8020/9866/9870 clashes.
            "dfs.namenode.rpc-address": f"{h}:{self.rpc_port}",
            "dfs.namenode.http-address": f"{h}:{self.http_port}",
            "dfs.namenode.https-address": f"{h}:{self._nn_https_port}",
            "dfs.namenode.rpc-bind-host": h,
            "dfs.namenode.http-bind-host": h,
            "dfs.datanode.address": f"{h}:{self.datanode_ports['data']}",
            "dfs.datanode.ipc.address": f"{h}:{self.datanode_ports['ipc']}",
            "dfs.datanode.http.address": f"{h}:{self.datanode_ports['http']}",
            "dfs.datanode.https.address": f"{h}:{self.datanode_ports['https']}",
            "dfs.datanode.hostname": h,
            "dfs.http.policy": "HTTP_ONLY",
            # Do not depend on the machine's DNS (containers, odd /etc/hosts).
            "dfs.namenode.datanode.registration.ip-hostname-check": False,
            "dfs.client.use.datanode.hostname": False,
            # Fast start: leave safe mode at once, heartbeat every second,
            # first block report right away.
            "dfs.namenode.safemode.extension": 0,
            "dfs.namenode.safemode.min.datanodes": 0,
            "dfs.heartbeat.interval": 1,
            "dfs.blockreport.initialDelay": 0,
            "dfs.namenode.edits.noeditlogchannelflush": True,
            # Dead-node detection after 2*recheck + 10*heartbeat = 14 s (default 10.5 min),
            # for failure-injection tests.
            "dfs.namenode.heartbeat.recheck-interval": 2000,
            "dfs.namenode.stale.datanode.interval": 3000,
            # Client side, for the dfs() shell (one DataNode only).
            "dfs.client.block.write.replace-datanode-on-failure.enable": False,
            # Tiny test disks are fine.
            "dfs.datanode.du.reserved": 0,
            "dfs.namenode.resource.du.reserved": 0,
            "dfs.namenode.fs-limits.min-block-size": 0,
        }
        hdfs.update(self.extra_conf)
        (self.conf_dir / "core-site.xml").write_text(_site_xml(core))
        (self.conf_dir / "hdfs-site.xml").write_text(_site_xml(hdfs))
        (self.conf_dir / "log4j.properties").write_text(_LOG4J)

    def _daemon_cmd(self, main_class: str, heap_mb: int, name: str, *args: str) -> list[str]:
        return [
            self.java, *JPMS_OPTIONS,
            # C1 only: less JIT work on a 2-core box during startup; plenty for tests.
            f"-Xmx{heap_mb}m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dproc_{name}",
            f"-Dhadoop.log.dir={self.log_dir}",
            f"-Dhadoop.log.file={name}.log",
            f"-Dhadoop.home.dir={self.work_dir}",
            f"-Dhadoop.id.str={self.user}",
            "-Dhadoop.root.logger=INFO,console",
            "-cp", f"{self.conf_dir}:{self.classpath}",
            main_class, *args,
        ]

    def _format(self) -> None:
        log = self.log_dir / "namenode-format.log"
        cmd = self._daemon_cmd(NAMENODE_CLASS, self.namenode_heap_mb, "namenode",
                               "-format", "-nonInteractive", "-clusterid", "optasia-test")
        with open(log, "ab") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.work_dir, timeout=120).returncode
        if rc != 0 or not (self.work_dir / "name" / "current" / "VERSION").exists():
            raise ServiceError(
                f"NameNode -format failed (exit {rc}); last lines of {log}:\n{_tail(log)}"
                + _hostname_hint()
            )
        self._formatted = True

    def _spawn(self, main_class: str, heap_mb: int, name: str, log: Path) -> subprocess.Popen:
        cmd = self._daemon_cmd(main_class, heap_mb, name)
        # Safety net for a test process killed without teardown (SIGKILL, CI
        # timeout): the kernel sends SIGTERM to the daemon when its parent
        # goes away. Linux ties this to the *thread* that forked, so only when
        # started from the main thread (a worker thread exiting would kill it).
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        with open(log, "ab") as out:
            return subprocess.Popen(
                cmd,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.work_dir, start_new_session=True,
            )

    def _start_namenode(self) -> None:
        self._nn = self._spawn(NAMENODE_CLASS, self.namenode_heap_mb, "namenode", self.namenode_log)

    def _start_datanode_process(self) -> None:
        self._dn = self._spawn(DATANODE_CLASS, self.datanode_heap_mb, "datanode", self.datanode_log)

    def _check_alive(self) -> None:
        for name, proc, log in (("NameNode", self._nn, self.namenode_log),
                                ("DataNode", self._dn, self.datanode_log)):
            if proc is not None and proc.poll() is not None:
                text = _tail(log, 200)
                if "BindException" in text or "Address already in use" in text:
                    raise _PortClash(f"{name}: {text.splitlines()[-1] if text else ''}")
                raise ServiceError(
                    f"{name} exited with code {proc.returncode} during startup\n"
                    + self.logs_tail() + _hostname_hint()
                )

    def _wait_datanode_registered(self, timeout: float) -> None:
        # The restarted process's own JMX says RUNNING only once its block-pool
        # actor has registered with the NameNode (the old process is gone, so its
        # port cannot answer); then the NameNode must count it as live.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._dn is not None and self._dn.poll() is not None:
                raise ServiceError(f"DataNode exited with code {self._dn.returncode}\n" + self.logs_tail())
            try:
                # Its JMX throws (and logs stack traces) until its IPC server is up.
                if port_is_open(self.datanode_ports["ipc"]) and self._datanode_http_up() and self.live_datanodes() >= 1:
                    return
            except (OSError, ServiceError, ValueError, KeyError):
                pass
            time.sleep(0.25)
        raise ServiceError(f"DataNode did not re-register within {timeout:.0f}s\n" + self.logs_tail())

    def _datanode_http_up(self) -> bool:
        url = f"http://{self.host}:{self.datanode_ports['http']}/jmx?qry=Hadoop:service=DataNode,name=DataNodeInfo"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=1) as resp:
                beans = json.load(resp).get("beans", [])
        except (OSError, ValueError):
            return False
        if not beans:
            return False
        actors = beans[0].get("BPServiceActorInfo")
        try:
            actors = json.loads(actors) if isinstance(actors, str) else actors
        except ValueError:
            return False
        return any(a.get("ActorState") == "RUNNING" for a in actors or [])

    @staticmethod
    def _terminate(proc: subprocess.Popen | None, *, kill: bool = False, timeout: float = 30.0) -> None:
        if proc is None or proc.poll() is not None:
            return None
        try:
            os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        return None

    def _kill_daemons(self) -> None:
        self._dn = self._terminate(self._dn, timeout=15)
        self._nn = self._terminate(self._nn, timeout=15)


class _PortClash(ServiceError):
    pass


def _hostname_hint() -> str:
    name = socket.gethostname()
    try:
        socket.gethostbyname(name)
        return ""
    except OSError:
        return (f"\nhint: this host's name {name!r} does not resolve; the NameNode needs "
                f"InetAddress.getLocalHost() to work: add '127.0.0.1 {name}' to /etc/hosts")
