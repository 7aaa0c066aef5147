"""The job's errors: each carries the exit code `python -m spark_jobs` ends with
(spark_jobs.contract names them), and a message meant for the operator."""

from __future__ import annotations

from . import contract


class EtlError(Exception):
    """An error with a message meant for the operator. ``exit_code`` tells its kind."""

    exit_code = contract.EXIT_FAILED


class ConfigError(EtlError):
    """Bad arguments or settings: fix the call."""

    exit_code = contract.EXIT_CONFIG


class InfrastructureError(EtlError):
    """A service (database, NameNode) is unreachable: transient, retry later."""

    exit_code = contract.EXIT_INFRASTRUCTURE


class ContractError(EtlError):
    """The data breaks the contract (missing file, conservation law): do not retry."""

    exit_code = contract.EXIT_CONTRACT


class OrderError(EtlError):
    """The batch may not run now (blocked, older than the latest, running elsewhere)."""

    exit_code = contract.EXIT_ORDER
