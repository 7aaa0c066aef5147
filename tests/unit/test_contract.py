"""spark_jobs.contract: the names, layout and laws every part of the bundle reads."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys

import pytest

from spark_jobs import contract


def test_the_batch_pattern_lets_through_exactly_the_real_dates():
    misfits = []
    for year in (1, 999, 1900, 1999, 2000, 2023, 2024, 2100, 2400, 9999):
        for month in range(14):
            for day in range(33):
                text = f"{year:04d}-{month:02d}-{day:02d}"
                try:
                    dt.date.fromisoformat(text)
                    real = True
                except ValueError:
                    real = False
                for half in "ab":
                    if bool(re.fullmatch(contract.BATCH_PATTERN, f"{text}_{half}")) != real:
                        misfits.append(f"{text}_{half}")
    assert misfits == []


@pytest.mark.parametrize("text", ["garbage", "2024-01-01_c", "2024-1-01_a", " 2024-01-01_a",
                                  "2024-01-01_a ", "2024-01-01_a\n", "2024-01-01"])
def test_the_batch_pattern_and_batch_date_refuse_other_shapes(text):
    assert not re.fullmatch(contract.BATCH_PATTERN, text)
    with pytest.raises(ValueError, match="batch_id .* is not of the form YYYY-MM-DD_a or YYYY-MM-DD_b"):
        contract.batch_date(text)


def test_batch_date_names_an_impossible_date():
    assert contract.batch_date("2024-02-29_b") == dt.date(2024, 2, 29)
    for text in ("2023-02-29_a", "0000-01-01_a"):
        assert not re.fullmatch(contract.BATCH_PATTERN, text)
        with pytest.raises(ValueError, match="does not name a real date"):
            contract.batch_date(text)


def test_the_batch_of_a_moment_is_its_utc_half_day():
    utc = dt.timezone.utc
    assert contract.batch_id_for(dt.datetime(2024, 3, 1, 11, 59, 59, tzinfo=utc)) == "2024-03-01_a"
    assert contract.batch_id_for(dt.datetime(2024, 3, 1, 12, 0, tzinfo=utc)) == "2024-03-01_b"
    plus3 = dt.timezone(dt.timedelta(hours=3))
    assert contract.batch_id_for(dt.datetime(2024, 3, 2, 1, 30, tzinfo=plus3)) == "2024-03-01_b"


def test_partitions_and_the_laws():
    assert contract.partition("/w/", "rejects", "2024-03-01_a") == "/w/rejects/batch_id=2024-03-01_a"
    m = {"subscribers_input": 10, "subscribers_rejected": {"malformed_row": 2}, "subscribers_duplicate": 1,
         "subscribers_inserted": 5, "subscribers_updated": 1, "subscribers_unchanged": 1,
         "transactions_input": 100, "pending_in": 10, "transactions_rejected": {"invalid_amount": 30},
         "transactions_duplicate": 5, "published": 60, "pending_out": 15, "pending_resolved": 0}
    assert set(m) == set(contract.METRIC_KEYS)
    assert contract.conservation_errors(m) == []
    assert contract.conservation_errors(dict(m, published=59)) == [
        "transactions_input + pending_in (110) != rejected + duplicate + published + pending_out (109)"]


def test_the_contract_imports_with_the_standard_library_only():
    """The airflow role ships this one file into the DAG's package."""
    code = ("import sys; sys.path = [p for p in sys.path if 'site-packages' not in p]; "
            "import importlib.util as u; s = u.spec_from_file_location('c', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.BATCH_PATTERN[:2])")
    out = subprocess.run([sys.executable, "-I", "-c", code, contract.__file__], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "^(", out.stderr


def test_the_airflow_role_s_line_bound_is_the_job_s_default():
    """The role renders the bound into the Variable the DAG passes to the job;
    the two defaults are one number."""
    from tests.services import airflow_role_defaults

    assert airflow_role_defaults()["airflow_pipeline_max_line_bytes"] == contract.DEFAULT_MAX_LINE_BYTES


def test_the_airflow_role_s_store_read_threshold_is_the_job_s_default_and_a_negative_one_is_refused():
    from spark_jobs import cli
    from spark_jobs.config import DEFAULT_STORE_FULL_READ_ROWS, Database, JobConfig
    from spark_jobs.errors import ConfigError
    from tests.services import airflow_role_defaults

    assert airflow_role_defaults()["airflow_pipeline_store_full_read_rows"] == DEFAULT_STORE_FULL_READ_ROWS
    db = Database(jdbc_url="jdbc:postgresql://h:5432/d", user="u", password="p")
    kw = dict(batch_id="2024-03-01_a", input_uri="file:///in", warehouse_uri="file:///wh", database=db)
    with pytest.raises(ConfigError,
                       match=r"store full read rows must be 0 or more \(got -1; the default is 2,000,000\)"):
        JobConfig(**kw, store_full_read_rows=-1)
    args = cli.parser().parse_args(["run", "--batch-id", "2024-03-01_a", "--warehouse-uri", "file:///wh",
                                    "--input-uri", "file:///in", "--jdbc-url", "jdbc:postgresql://h/d",
                                    "--store-full-read-rows", "0"])
    assert args.store_full_read_rows == 0


def test_a_line_bound_out_of_range_is_refused_with_the_range_and_the_default():
    from spark_jobs import cli
    from spark_jobs.config import Database, JobConfig
    from spark_jobs.errors import ConfigError

    db = Database(jdbc_url="jdbc:postgresql://h:5432/d", user="u", password="p")
    kw = dict(batch_id="2024-03-01_a", input_uri="file:///in", warehouse_uri="file:///wh", database=db)
    assert JobConfig(**kw).max_line_bytes == contract.DEFAULT_MAX_LINE_BYTES
    for bad in (0, 255, (1 << 30) + 1):
        with pytest.raises(ConfigError, match=r"max line bytes must be within 256\.\.1,073,741,824 .*1,048,576"):
            JobConfig(**kw, max_line_bytes=bad)
    args = cli.parser().parse_args(["run", "--batch-id", "2024-03-01_a", "--warehouse-uri", "file:///wh",
                                    "--input-uri", "file:///in", "--jdbc-url", "jdbc:postgresql://h/d",
                                    "--max-line-bytes", "4096"])
    assert args.max_line_bytes == 4096
