"""Connections to the store database: the one place that opens them (the
migrations and the store module both use it)."""

from __future__ import annotations

import psycopg

from .config import Database
from .errors import InfrastructureError


def connect(db: Database) -> psycopg.Connection:
    """Open a connection or raise an InfrastructureError saying where and why."""
    try:
        return psycopg.connect(**db.conninfo())
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InfrastructureError(
            f"cannot reach the store database at {db.where} as {db.user}: {reason}. "
            "Check that PostgreSQL is running and the credentials are right; the run can be retried."
        ) from None
