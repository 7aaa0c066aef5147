"""spark_jobs.publish on a local folder: the refusals that keep a bad staging
out of the warehouse, and the order of the moves (the integration tests run it
on HDFS through both clients)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spark_jobs import publish
from spark_jobs.errors import EtlError, InfrastructureError


class LocalFs:
    """The publish's filesystem protocol over a local folder."""

    def __init__(self):
        self.renames: list[tuple[str, str]] = []

    def exists(self, path):
        return Path(path).exists()

    def rename(self, src, dst):
        assert not Path(dst).exists(), dst
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        Path(src).rename(dst)
        self.renames.append((src, dst))

    def delete(self, path):
        shutil.rmtree(path, ignore_errors=True)

    def read_text(self, path):
        return Path(path).read_text()


def stage(tmp_path: Path, run_id: int, success=("rejects", "transactions"), metrics_run=None) -> dict:
    root = tmp_path / "_staging"
    for ds in ("rejects", "transactions"):
        d = root / "2024-03-01_a" / f"run-{run_id}" / ds
        d.mkdir(parents=True)
        (d / "part-0.parquet").write_text(ds)
        if ds in success:
            (d / "_SUCCESS").write_text("")
    (root / "2024-03-01_a" / f"run-{run_id}" / "transactions" / "_metrics.json").write_text(
        json.dumps({"run_id": metrics_run or run_id}))
    return dict(batch_id="2024-03-01_a", run_id=run_id, warehouse=str(tmp_path / "wh"), staging_root=str(root))


def test_a_staged_run_moves_rejects_then_transactions_and_is_recorded(tmp_path):
    fs, marked = LocalFs(), []
    args = stage(tmp_path, 7)
    publish.publish(fs, mark_published=lambda b, r: marked.append((b, r)), **args)
    assert [Path(d).parts[-2:] for _, d in fs.renames] == [("rejects", "batch_id=2024-03-01_a"),
                                                           ("transactions", "batch_id=2024-03-01_a")]
    assert marked == [("2024-03-01_a", 7)]
    assert publish.published_run(fs, args["warehouse"], "2024-03-01_a") == 7
    assert not (tmp_path / "_staging" / "2024-03-01_a").exists()


def test_a_staged_dataset_without_success_is_refused_and_nothing_moves(tmp_path):
    fs = LocalFs()
    args = stage(tmp_path, 7, success=("transactions",))
    with pytest.raises(EtlError, match="rejects has no _SUCCESS marker: the staged write is incomplete"):
        publish.publish(fs, mark_published=lambda b, r: None, **args)
    assert fs.renames == []


def test_a_partition_of_another_run_is_not_recorded(tmp_path):
    fs, marked = LocalFs(), []
    args = stage(tmp_path, 7, metrics_run=6)
    with pytest.raises(EtlError, match="is from run 6, not run 7; rerun batch 2024-03-01_a"):
        publish.publish(fs, mark_published=lambda b, r: marked.append(r), **args)
    assert marked == []


def test_a_missing_staging_with_nothing_published_says_rerun(tmp_path):
    args = dict(batch_id="2024-03-01_a", run_id=3, warehouse=str(tmp_path / "wh"), staging_root=str(tmp_path / "s"))
    with pytest.raises(EtlError, match="staged partition .* is missing; rerun batch 2024-03-01_a"):
        publish.publish(LocalFs(), mark_published=lambda b, r: None, **args)


def test_a_store_that_cannot_be_reached_is_transient_and_the_retry_finishes(tmp_path):
    fs, said = LocalFs(), []
    args = stage(tmp_path, 7)

    def down(b, r):
        raise OSError("connection refused")

    with pytest.raises(InfrastructureError, match="could not record the publish .* publishing again is safe"):
        publish.publish(fs, mark_published=down, **args)
    publish.publish(fs, mark_published=lambda b, r: None, say=said.append, **args)
    assert sum("already moved by an earlier try" in line for line in said) == 2


def test_a_store_refusal_is_not_wrapped(tmp_path):
    def refuse(b, r):
        raise EtlError("batch 2024-03-01_a run 7 is not the applied run")

    with pytest.raises(EtlError, match="is not the applied run") as err:
        publish.publish(LocalFs(), mark_published=refuse, **stage(tmp_path, 7))
    assert not isinstance(err.value, InfrastructureError)
