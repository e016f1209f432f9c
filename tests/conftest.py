"""Fixtures for every test level: actor cleanup, settings on tmp_path, servers and receivers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from procq.actors.settings import Settings, WebhookPolicy
from tests.browser import browser, page  # noqa: F401 - the dashboard tests' fixtures
from tests.helpers import Receiver, ServerProcess, end_keeper
from tests.pgdb import pg_url  # noqa: F401 - a fixture: a fresh PostgreSQL schema


@pytest.fixture(autouse=True)
def stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "jobs"
    path.mkdir()
    yield path
    pykka.ActorRegistry.stop_all(timeout=10)  # a Dispatcher drains its keeper as it stops
    end_keeper(path)


@pytest.fixture
def settings(jobs_dir: Path) -> Settings:
    """Short grace and fast webhook retries, so tests stay quick."""
    policy = WebhookPolicy(max_attempts=4, backoff_base_s=0.1, backoff_cap_s=0.5, timeout_s=2.0)
    return Settings(jobs_dir=jobs_dir, workers=2, grace_s=1.0, webhook=policy)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture
def start_server(jobs_dir: Path) -> Iterator:
    """start_server(*flags) -> ServerProcess on `jobs_dir`; every server still running at the end is killed."""
    started: list[ServerProcess] = []

    def start(*flags: str, directory: Path | None = None, env: dict[str, str] | None = None) -> ServerProcess:
        defaults = ("--workers", "2", "--grace", "1", "--webhook-backoff", "0.1", "--webhook-backoff-cap", "0.5")
        server = ServerProcess(directory or jobs_dir, *defaults, *flags, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.kill()
    for directory in {server.jobs_dir for server in started}:
        end_keeper(directory)
