"""Job configuration: batch ids, database settings and credentials.

Credentials come from the environment or a file, never the command line
(a command line is visible to every user of the host through ``ps``).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from . import contract
from .contract import DEFAULT_CHANNELS, DEFAULT_MAX_LINE_BYTES
from .errors import ConfigError


def parse_batch_id(batch_id: str) -> dt.date:
    """Return the batch date of ``YYYY-MM-DD_a|b``; ConfigError otherwise."""
    try:
        return contract.batch_date(batch_id)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_channels(text: str | None) -> tuple[str, ...]:
    if not text:
        return DEFAULT_CHANNELS
    channels = tuple(c.strip().upper() for c in text.split(",") if c.strip())
    if not channels:
        raise ConfigError("allowed channels list is empty")
    return channels


@dataclass(frozen=True)
class Database:
    """Where the store lives, as a JDBC URL plus credentials."""

    jdbc_url: str
    user: str
    password: str = field(repr=False)
    host: str = ""
    port: int = 5432
    dbname: str = ""
    sslmode: str | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname}"

    def conninfo(self) -> dict:
        """Keyword arguments for psycopg.connect."""
        kw = dict(host=self.host, port=self.port, dbname=self.dbname, user=self.user,
                  password=self.password, connect_timeout=10, application_name="optasia-etl")
        if self.sslmode:
            kw["sslmode"] = self.sslmode
        return kw

    def jdbc_properties(self) -> dict:
        """Options for Spark's JDBC source and sink."""
        return {"url": self.jdbc_url, "user": self.user, "password": self.password,
                "driver": "org.postgresql.Driver"}


def database_from(jdbc_url: str, user: str | None = None, password_file: str | None = None,
                  environ: dict | None = None) -> Database:
    """Build a Database from a JDBC URL and the credential sources.

    User: argument, else ``user`` in the URL, else ``OPTASIA_DB_USER``.
    Password: ``password_file`` (or ``OPTASIA_DB_PASSWORD_FILE``), else
    ``OPTASIA_DB_PASSWORD``. A password inside the URL is refused.
    """
    env = os.environ if environ is None else environ
    if not jdbc_url or not jdbc_url.startswith("jdbc:postgresql://"):
        raise ConfigError(f"JDBC URL must start with jdbc:postgresql:// (got {jdbc_url!r})")
    parts = urlsplit(jdbc_url[len("jdbc:"):])
    params = dict(parse_qsl(parts.query))
    if "password" in {k.lower() for k in params} or parts.password:
        raise ConfigError(
            "the JDBC URL carries a password; put it in OPTASIA_DB_PASSWORD or a file "
            "named by --db-password-file / OPTASIA_DB_PASSWORD_FILE instead"
        )
    user = user or params.get("user") or (unquote(parts.username) if parts.username else None) \
        or env.get("OPTASIA_DB_USER")
    if not user:
        raise ConfigError("no database user: set OPTASIA_DB_USER or pass --db-user")
    password_file = password_file or env.get("OPTASIA_DB_PASSWORD_FILE")
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as fh:
                password = fh.read().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the database password file {password_file}: {exc.strerror}") from None
    else:
        password = env.get("OPTASIA_DB_PASSWORD")
    if password is None:
        raise ConfigError(
            "no database password: set OPTASIA_DB_PASSWORD or OPTASIA_DB_PASSWORD_FILE "
            "(or pass --db-password-file)"
        )
    if not parts.hostname or not parts.path.strip("/"):
        raise ConfigError(f"JDBC URL {jdbc_url!r} must name a host and a database")
    clean_url = f"jdbc:postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}"
    extra = {k: v for k, v in params.items() if k.lower() != "user"}
    if extra:
        clean_url += "?" + "&".join(f"{k}={v}" for k, v in extra.items())
    return Database(jdbc_url=clean_url, user=user, password=password, host=parts.hostname,
                    port=parts.port or 5432, dbname=parts.path.strip("/"),
                    sslmode=params.get("sslmode"))


def _authority(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return parts.scheme or "file", parts.netloc


# The bound on one line: at least a valid transaction line with every field
# padded a little; at most what one Spark string holds with room to spare.
MIN_MAX_LINE_BYTES = 256
MAX_MAX_LINE_BYTES = 1 << 30
# Below this many subscribers the store is read whole (see JobConfig).
DEFAULT_STORE_FULL_READ_ROWS = 2_000_000


@dataclass(frozen=True)
class JobConfig:
    """Everything one run of the job needs."""

    batch_id: str
    input_uri: str          # folder holding <batch_id>/subscribers.csv and transactions.csv
    warehouse_uri: str      # folder of transactions/, rejects/, _staging/
    database: Database
    allowed_channels: tuple[str, ...] = DEFAULT_CHANNELS
    pending_ttl_days: int = 7
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES   # a longer line is a malformed_row, not parsed
    force: bool = False     # allow rerunning a batch older than the latest one
    jdbc_partitions: int = 2      # parallel JDBC reads of the store
    # A store with fewer subscribers than this is read whole, in the same query
    # as the transactions; a larger one is read by the batch's sub_ids, staged
    # into it first (one more pass over the transactions file). 0: always by key.
    store_full_read_rows: int = DEFAULT_STORE_FULL_READ_ROWS
    staging_uri: str = ""   # where partitions are written before the rename; same filesystem
                            # as the warehouse (default <warehouse>/_staging)

    def __post_init__(self):
        parse_batch_id(self.batch_id)
        if self.pending_ttl_days < 0:
            raise ConfigError("pending TTL must be 0 or more days")
        if not MIN_MAX_LINE_BYTES <= self.max_line_bytes <= MAX_MAX_LINE_BYTES:
            raise ConfigError(
                f"max line bytes must be within {MIN_MAX_LINE_BYTES:,}..{MAX_MAX_LINE_BYTES:,} "
                f"(got {self.max_line_bytes:,}; the default is {DEFAULT_MAX_LINE_BYTES:,})")
        if self.store_full_read_rows < 0:
            raise ConfigError(f"store full read rows must be 0 or more (got {self.store_full_read_rows}; "
                              f"the default is {DEFAULT_STORE_FULL_READ_ROWS:,})")
        if self.staging_uri and _authority(self.staging_uri) != _authority(self.warehouse_uri):
            raise ConfigError(
                f"staging {self.staging_uri} and warehouse {self.warehouse_uri} must be on the same "
                "filesystem: a partition is published by one rename")

    @property
    def batch_date(self) -> dt.date:
        return parse_batch_id(self.batch_id)

    def input_path(self, name: str) -> str:
        return f"{self.input_uri.rstrip('/')}/{self.batch_id}/{name}"

    def partition_path(self, dataset: str) -> str:
        return contract.partition(self.warehouse_uri, dataset, self.batch_id)

    @property
    def staging_root(self) -> str:
        return contract.staging_root(self.warehouse_uri, self.staging_uri)

    def staging_path(self, run_id: int) -> str:
        return contract.staged_run(self.staging_root, self.batch_id, run_id)
