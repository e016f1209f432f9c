"""JobDir: atomic meta.json, nothing half-made, earlier runs' output kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from procq.actors.dispatch.recovery import sweep_leftovers
from procq.actors.job import Job, Status
from procq.actors.jobdir import JobDir


def _job(status: Status = Status.IN_QUEUE) -> Job:
    return Job(id="0" * 32, args=("true",), status=status)


def test_create_writes_meta_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    jobdir = JobDir(tmp_path / ("0" * 32))
    jobdir.create(_job())
    jobdir.write(_job(Status.COMPLETED))
    assert jobdir.read().status is Status.COMPLETED
    assert [p.name for p in jobdir.path.iterdir()] == ["meta.json"]


def test_a_failed_write_keeps_the_previous_meta(tmp_path: Path, monkeypatch) -> None:
    jobdir = JobDir(tmp_path / ("0" * 32))
    jobdir.create(_job())

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("procq.actors.jobdir.osdeps.replace_file", disk_full)
    with pytest.raises(OSError):
        jobdir.write(_job(Status.COMPLETED))
    assert jobdir.read().status is Status.IN_QUEUE
    assert [p.name for p in jobdir.path.iterdir()] == ["meta.json"]


def test_create_leaves_nothing_when_it_cannot_finish(tmp_path: Path, monkeypatch) -> None:
    jobdir = JobDir(tmp_path / ("0" * 32))
    monkeypatch.setattr(
        "procq.actors.jobdir.osdeps.replace_file", lambda *a: (_ for _ in ()).throw(OSError(28, "full"))
    )
    with pytest.raises(OSError):
        jobdir.create(_job())
    assert not jobdir.path.exists()


def test_each_run_gets_fresh_output_files_and_earlier_ones_are_kept(tmp_path: Path) -> None:
    jobdir = JobDir(tmp_path / ("0" * 32))
    jobdir.create(_job())
    for attempt in (1, 2):
        out, err = jobdir.open_outputs(attempt)
        with out, err:
            out.write(f"run {attempt}".encode())
    assert jobdir.stdout.read_bytes() == b"run 2"
    assert (jobdir.path / "stdout.1.txt").read_bytes() == b"run 1"


def test_old_temporary_files_are_swept_and_young_ones_kept(tmp_path: Path) -> None:
    jobdir = JobDir(tmp_path / ("0" * 32))
    jobdir.create(_job())
    old, young = jobdir.path / "meta.json.old.tmp", jobdir.path / "meta.json.young.tmp"
    old.write_bytes(b"{half")
    young.write_bytes(b"{half")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert sweep_leftovers(tmp_path) == 1
    assert sorted(p.name for p in jobdir.path.iterdir()) == ["meta.json", "meta.json.young.tmp"]


def test_a_creation_cut_short_leaves_only_a_staging_directory_that_is_swept(tmp_path: Path) -> None:
    staging = tmp_path / (".new-" + "0" * 32)  # what a crash between mkdir and rename leaves
    staging.mkdir()
    (staging / "meta.json").write_bytes(b"{}")
    os.utime(staging, (time.time() - 3600, time.time() - 3600))
    assert sweep_leftovers(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []
