"""Small leaks closed: answers that told too much or left files behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from procq.actors.supervise.spawn import resolve_cwd


def test_cwd_errors_do_not_tell_whether_a_path_outside_the_root_exists(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "exists-outside").mkdir()
    messages = []
    for cwd in ("../exists-outside", "../missing-outside", str(tmp_path / "exists-outside"), "missing"):
        with pytest.raises(ValueError) as refused:
            resolve_cwd(root, cwd)
        messages.append(str(refused.value).replace(repr(cwd), "CWD"))
    assert len(set(messages)) == 1, messages
    assert resolve_cwd(root, "inside") == (root / "inside").resolve()


def test_a_health_probe_that_fails_to_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from procq.api.health import HealthResource

    def full_disk(self: Path, data: bytes) -> int:
        self.touch()  # the file is created, then the write fails: what a full disk does
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert "not writable" in HealthResource(None, tmp_path)._jobs_dir_check()
    assert list(tmp_path.iterdir()) == []
