"""A real, throw-away PostgreSQL server for tests.

initdb into a temp dir, start on a free 127.0.0.1 port with the unix socket
inside the temp dir, create a login role with a generated password and a
database it owns. TCP connections need that password (scram-sha-256); the
unix socket trusts the bootstrap superuser ``postgres`` for admin work.

initdb and postgres refuse to run as root: when the test process is root they
run as the ``postgres`` system user (Debian's postgresql package creates it),
or as a dedicated unprivileged ``optasia-pgtest`` user created on demand
(``setpriv`` switches the user, with no PAM session in between).

The postmaster runs in the foreground as a child of the test process (not
daemonized by pg_ctl), so :meth:`PostgresServer.stop` can wait for it and, as a
safety net, the kernel stops it (SIGTERM) when the test process dies without
tearing down (parent-death signal, set when started from the main thread).

    with PostgresServer() as pg:
        with pg.connect() as conn:
            conn.execute("select 1")
        pg.jdbc_url   # jdbc:postgresql://127.0.0.1:PORT/DB
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from . import ServiceError
from .ports import LOOPBACK, free_port

FALLBACK_SYSTEM_USER = "optasia-pgtest"

_FAST_SETTINGS = {
    # Throw-away data: durability off, start and run fast.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "100",
    "max_wal_size": "256MB",
    "checkpoint_timeout": "30min",
    "autovacuum": "off",
    "jit": "off",
    "password_encryption": "scram-sha-256",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "datestyle": "iso, mdy",
    "lc_messages": "C",
}


def find_pg_bindir() -> Path:
    """Directory with initdb/postgres: $PG_BINDIR, ``pg_config --bindir``,
    or the newest /usr/lib/postgresql/*/bin."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass

    def major(p: str) -> int:
        m = re.search(r"/postgresql/(\d+)/bin", p)
        return int(m.group(1)) if m else 0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    for c in candidates:
        if c and os.access(os.path.join(c, "initdb"), os.X_OK) and os.access(os.path.join(c, "postgres"), os.X_OK):
            return Path(c)
    raise ServiceError(
        "PostgreSQL server binaries (initdb, postgres) not found: install them "
        "(Debian: apt-get install -y postgresql) or set PG_BINDIR"
    )


def _ensure_system_user() -> pwd.struct_passwd:
    """An unprivileged OS user to run the server as when we are root."""
    for name in (os.environ.get("OPTASIA_PG_OS_USER"), "postgres", FALLBACK_SYSTEM_USER):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", FALLBACK_SYSTEM_USER],
        check=True, capture_output=True,
    )
    return pwd.getpwnam(FALLBACK_SYSTEM_USER)


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1.

    Constructor arguments (keyword-only, all optional):
      dbname, user      database and login role to create (default: ``optasia``/``optasia``)
      password          the role's password (default: generated)
      base_dir          parent of the temp dir (default: /tmp, which the server user can reach)
      settings          extra postgresql.conf settings (override the fast defaults)
      startup_timeout   seconds until the server accepts connections (default 60)
      keep_dir          keep the temp dir after stop() (also env OPTASIA_KEEP_TEST_DIRS=1)

    Attributes after start(): host, port, dbname, user, password, jdbc_url, dsn,
    url, sqlalchemy_url, jdbc_properties, socket_dir, data_dir, log_path,
    bindir, os_user, superuser.
    """

    host = LOOPBACK
    superuser = "postgres"

    def __init__(
        self,
        *,
        dbname: str = "optasia",
        user: str = "optasia",
        password: str | None = None,
        base_dir: str | os.PathLike | None = None,
        settings: Mapping[str, Any] | None = None,
        startup_timeout: float = 60.0,
        keep_dir: bool | None = None,
    ) -> None:
        self.dbname = dbname
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        self.base_dir = Path(base_dir) if base_dir else Path("/tmp")
        self.settings = {**_FAST_SETTINGS, **{k: str(v) for k, v in (settings or {}).items()}}
        self.startup_timeout = startup_timeout
        self.keep_dir = keep_dir if keep_dir is not None else os.environ.get("OPTASIA_KEEP_TEST_DIRS") == "1"
        self.bindir = find_pg_bindir()
        self.port = 0
        self.work_dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        if os.geteuid() == 0:
            pw = _ensure_system_user()
            self.os_user: str = pw.pw_name
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
        else:
            self.os_user = pwd.getpwuid(os.geteuid()).pw_name
            self._uid = self._gid = None

    # ---------------------------------------------------------------- paths
    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.work_dir / "sock"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "postgres.log"

    # ------------------------------------------------------ connection info
    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.dbname}"

    @property
    def jdbc_properties(self) -> dict[str, str]:
        """For Spark's ``DataFrameWriter.jdbc(url, table, properties=...)``."""
        return {"user": self.user, "password": self.password, "driver": "org.postgresql.Driver"}

    @property
    def dsn(self) -> str:
        """libpq conninfo (key=value) for psycopg: password auth over TCP."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.host, port=self.port, dbname=self.dbname,
                             user=self.user, password=self.password)

    @property
    def url(self) -> str:
        """``postgresql://user:password@127.0.0.1:PORT/db`` (libpq URI)."""
        return (f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{quote(self.dbname, safe='')}")

    @property
    def sqlalchemy_url(self) -> str:
        """``postgresql+psycopg://...`` for SQLAlchemy / Airflow connections."""
        return "postgresql+psycopg" + self.url[len("postgresql"):]

    @property
    def admin_dsn(self) -> str:
        """Superuser conninfo over the unix socket (trust auth)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=str(self.socket_dir), port=self.port, dbname="postgres",
                             user=self.superuser)

    def connect(self, *, dbname: str | None = None, **kwargs):
        """A psycopg (v3) connection as the test role, over TCP with the password."""
        import psycopg

        params = dict(host=self.host, port=self.port, dbname=dbname or self.dbname,
                      user=self.user, password=self.password, connect_timeout=10)
        params.update(kwargs)
        return psycopg.connect(**params)

    def connect_admin(self, *, dbname: str = "postgres", autocommit: bool = True, **kwargs):
        """A psycopg connection as the superuser over the unix socket."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, dbname=dbname,
                               user=self.superuser, autocommit=autocommit, **kwargs)

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        """Create another database (owned by the test role unless ``owner``)."""
        from psycopg import sql

        with self.connect_admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner or self.user)))

    # ----------------------------------------------------------- lifecycle
    def __enter__(self) -> "PostgresServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "PostgresServer":
        if self._proc is not None:
            return self
        t0 = time.monotonic()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir = Path(tempfile.mkdtemp(prefix="optasia-pg-", dir=self.base_dir))
        os.chmod(self.work_dir, 0o755)
        self.socket_dir.mkdir()
        if self._uid is not None:
            for p in (self.work_dir, self.socket_dir):
                os.chown(p, self._uid, self._gid)
        atexit.register(self.stop)
        try:
            self._initdb()
            for _attempt in range(3):
                self.port = free_port()
                self._write_conf()
                if self._start_postmaster():
                    break
                if not re.search(r"could not bind|already in use", self._log_tail(30)):
                    raise ServiceError(
                        f"PostgreSQL did not start (exit {self._proc.returncode}); last lines of "
                        f"{self.log_path}:\n" + self._log_tail()
                    )
                self._proc = None
            else:
                raise ServiceError("PostgreSQL could not bind a free port after 3 attempts\n" + self._log_tail())
            self._create_role_and_db()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop immediately (no shutdown checkpoint) and remove the temp dir."""
        atexit.unregister(self.stop)
        if self.work_dir is None:
            return
        if self._proc is not None and self._proc.poll() is None:
            # SIGQUIT = immediate shutdown (pg_ctl stop -m immediate): no checkpoint.
            self._proc.send_signal(signal.SIGQUIT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        if not self.keep_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # ----------------------------------------------------------- internals
    def _as_server_user(self, cmd: list[str], *, pdeathsig: bool = False) -> list[str]:
        pre: list[str] = []
        if self._uid is not None:
            pre = ["setpriv", f"--reuid={self._uid}", f"--regid={self._gid}", "--init-groups"]
        # Linux ties the parent-death signal to the forking *thread*: only from
        # the main thread (a worker thread ending would stop the server).
        if pdeathsig and threading.current_thread() is threading.main_thread():
            pre = (pre or ["setpriv"]) + ["--pdeathsig", "TERM"]
        return [*pre, "--", *cmd] if pre else cmd

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC", HOME=str(self.work_dir))
        return env

    def _run(self, cmd: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._as_server_user(cmd), capture_output=True, text=True, timeout=timeout,
                              env=self._env(), cwd=self.work_dir, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise ServiceError(
                f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def _initdb(self) -> None:
        self._run([
            str(self.bindir / "initdb"), "-D", str(self.data_dir),
            "-U", self.superuser, "-E", "UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256",
            "--no-sync", "--no-instructions",
        ])

    def _write_conf(self) -> None:
        conf = {
            **self.settings,
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        lines = ["# written by tests/services/postgres.py"]
        for k, v in conf.items():
            if not re.fullmatch(r"'.*'|[\w.\-]+", v):
                v = "'" + v.replace("'", "''") + "'"
            lines.append(f"{k} = {v}")
        # postgresql.auto.conf is read last and wins over postgresql.conf.
        path = self.data_dir / "postgresql.auto.conf"
        path.write_text("\n".join(lines) + "\n")
        if self._uid is not None:
            os.chown(path, self._uid, self._gid)
        # TCP: password (scram) only, loopback only; socket: trust for admin work.
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# written by tests/services/postgres.py\n"
            "local   all   all                  trust\n"
            "host    all   all   127.0.0.1/32   scram-sha-256\n"
        )
        if self._uid is not None:
            os.chown(hba, self._uid, self._gid)

    def _start_postmaster(self) -> bool:
        """Start postgres in the foreground; True once it accepts connections,
        False if it exited (the caller reads the log)."""
        import psycopg

        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._as_server_user([str(self.bindir / "postgres"), "-D", str(self.data_dir)], pdeathsig=True),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self._env(), cwd=self.work_dir, start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if (self.socket_dir / f".s.PGSQL.{self.port}").exists():
                try:
                    psycopg.connect(self.admin_dsn, connect_timeout=2).close()
                    return True
                except psycopg.OperationalError:
                    pass  # "the database system is starting up"
            time.sleep(0.05)
        self._proc.kill()
        self._proc.wait(timeout=10)
        raise ServiceError(
            f"PostgreSQL did not accept connections within {self.startup_timeout:.0f}s; "
            f"last lines of {self.log_path}:\n" + self._log_tail()
        )

    def _create_role_and_db(self) -> None:
        from psycopg import sql

        with self.connect_admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(self.user), sql.Literal(self.password)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(self.dbname), sql.Identifier(self.user)))

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {self.log_path})"
