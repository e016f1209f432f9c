"""Settings come from flags, then PROCQ_* variables, then the TOML file (--config), then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from procq.server.flags import parse_args


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "procq.toml"
    path.write_text('threads = 10\nretention = "12h"\nlog-format = "json"\nworkers = 3\n')
    return path


def test_flags_beat_variables_beat_the_file_beat_defaults(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROCQ_THREADS", raising=False)
    monkeypatch.delenv("PROCQ_RETENTION", raising=False)
    args = parse_args(["--config", str(toml)])
    assert (args.threads, args.retention, args.log_format, args.workers) == (10, 12 * 3600, "json", 3)
    assert args.max_streams == 7  # 3/4 of the threads by default
    monkeypatch.setenv("PROCQ_THREADS", "12")
    assert parse_args(["--config", str(toml)]).threads == 12
    assert parse_args(["--config", str(toml), "--threads", "14"]).threads == 14
    monkeypatch.setenv("PROCQ_CONFIG", str(toml))
    assert parse_args([]).workers == 3
    monkeypatch.delenv("PROCQ_CONFIG")
    defaults = parse_args([])
    assert (defaults.retention, defaults.log_format, defaults.threads) == (7 * 86400, "text", 12)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("colour = 'red'\n", "unknown settings"),
        ("threads = 'many'\n", "--threads"),
        ("retention = '3 weeks'\n", "not a duration"),
        ("this is not toml\n", "not valid TOML"),
        ("[server]\nport = 1\n", "plain key = value"),
    ],
)
def test_a_bad_config_file_stops_the_server_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--config", str(path)])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_retention_accepts_seconds_and_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROCQ_RETENTION", raising=False)
    assert parse_args(["--retention", "0"]).retention == 0
    assert parse_args(["--retention", "90"]).retention == 90
    assert parse_args(["--retention", "30m"]).retention == 1800
    assert parse_args(["--retention", "7d"]).retention == 7 * 86400
    with pytest.raises(SystemExit):
        parse_args(["--threads", "4", "--max-streams", "4"])
