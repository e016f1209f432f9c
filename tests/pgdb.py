"""A PostgreSQL schema of its own for each test, on the local server (127.0.0.1:5432, trust auth).

Without a reachable server, or without psycopg installed (the `cluster` extra), the tests that need one
are skipped; with PROCQ_REQUIRE_POSTGRES=1 (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

BASE_URL = os.environ.get("PROCQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _missing(reason: str) -> None:
    if os.environ.get("PROCQ_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (PROCQ_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"needs PostgreSQL: {reason}")


def admin():  # noqa: ANN201 - psycopg may be missing: the type is not importable everywhere
    try:
        import psycopg
    except ImportError:
        _missing("psycopg is not installed (pip install -e '.[test]')")
    try:
        return psycopg.connect(BASE_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        _missing(f"cannot connect to {BASE_URL}: {exc}")


def url_with_schema(base: str, name: str) -> str:
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}options={quote(f'-c search_path={name}')}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections see only a fresh schema, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield url_with_schema(BASE_URL, name)
    finally:
        with admin() as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")
