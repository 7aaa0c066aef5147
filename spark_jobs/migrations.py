"""Versioned SQL migrations of the store (``db-init``).

Files ``sql/NNNN_name.sql`` are applied in order, each in its own
transaction, and recorded in ``schema_migrations`` with a checksum. Running
it again applies only what is new; an applied file that was edited later is
refused (a migration is never changed once released: add a new one).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from .config import Database
from .db import connect
from .errors import ConfigError, EtlError

log = logging.getLogger(__name__)
MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant both sides agree on: serialises concurrent db-init runs.
MIGRATION_LOCK = 0x0F7A5_1A


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with the package, in order."""
    out = []
    for entry in resources.files("spark_jobs").joinpath("sql").iterdir():
        m = MIGRATION_RE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if len(set(versions)) != len(versions):
        raise EtlError(f"two migration files share a version number: {versions}")
    return out


def latest_version() -> int:
    return available()[-1].version


def migrate(db: Database) -> list[Migration]:
    """Apply every migration not yet applied; return those applied now."""
    applied_now = []
    with connect(db) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.commit()
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
            for mig in available():
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        raise ConfigError(
                            f"migration {mig.version:04d}_{mig.name}.sql was changed after it was "
                            "applied; restore it and add a new migration for the change"
                        )
                    continue
                log.info("applying migration %04d_%s", mig.version, mig.name)
                with conn.transaction():
                    conn.execute(mig.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (mig.version, mig.name, mig.checksum),
                    )
                applied_now.append(mig)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            conn.commit()
    return applied_now


def current_version(conn) -> int | None:
    """The highest applied migration, or None when db-init never ran."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return None
    return conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
