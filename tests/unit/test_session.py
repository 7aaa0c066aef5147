"""The driver's class archive: the JVM options and the warm-up batch that records it."""

from __future__ import annotations

from spark_jobs.session import class_archive_options
from spark_jobs.warmup import exercise


def test_an_existing_archive_is_mapped_and_a_missing_one_is_ignored(tmp_path):
    archive = tmp_path / "classes.jsa"
    assert class_archive_options(str(archive)) == ""      # not there: the JVM starts as without one
    assert class_archive_options(None) == ""
    archive.write_bytes(b"x")
    opts = class_archive_options(str(archive))
    assert f"-XX:SharedArchiveFile={archive}" in opts and "-Xlog:cds=off" in opts


def test_recording_wins_over_mapping(tmp_path):
    archive = tmp_path / "classes.jsa"
    archive.write_bytes(b"x")
    opts = class_archive_options(str(archive), record=str(tmp_path / "new.jsa"))
    assert opts.startswith(f"-XX:ArchiveClassesAtExit={tmp_path / 'new.jsa'}")
    assert "SharedArchiveFile" not in opts


def test_the_warm_up_batch_runs_the_job_s_steps(spark, tmp_path):
    # A1 (store 2023-06-01) gets two duplicates collapsed into one published row,
    # A3 (quoted line, +02:00 zone) one; B9 is unmatched and expired, A2 invalid.
    assert exercise(spark, str(tmp_path)) == 2
    assert (tmp_path / "out" / "rejects").is_dir()
