"""Hostile input, tried on every route of a real server: each answer is a JSON 4xx naming what to fix,
and the jobs directory is exactly as it was (nothing created that could not be read back)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon.inspect
import pytest
import requests

from procq.actors.store.sqlite import DB_NAME
from procq.api.app import create_app
from tests.helpers import ServerProcess
from tests.secure_helpers import make_key

JSON = {"Content-Type": "application/json"}
MAX_BODY = 65536


@dataclass(frozen=True)
class Case:
    method: str
    route: str  # the route template it exercises
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    needle: str = ""  # a word the description must contain


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, str]]:
    root = tmp_path_factory.mktemp("bad-input")
    jobs_dir = root / "jobs"
    jobs_dir.mkdir()
    # Safety: even a body that slipped through could run only this file, and call no webhook off loopback.
    only = root / "procq-corpus-allowed-only"
    only.write_text("#!/bin/sh\necho ok\n")
    only.chmod(0o755)
    server = ServerProcess(
        jobs_dir, "--allow-command", str(only), "--webhook-deny-private", "--max-body-bytes", str(MAX_BODY)
    )
    job = server.submit([str(only)])
    server.wait_status(job["id"], "COMPLETED")
    yield server, job["id"], str(only)
    assert server.stop() == 0


def _snapshot(jobs_dir: Path) -> dict[str, bytes]:
    """Every file's bytes but the store's own files (reads and idle bookkeeping write there), and
    what the store holds: every row of its tables, read like any client of the database would."""
    files = sorted(p for p in jobs_dir.rglob("*") if p.is_file() and not p.name.startswith(DB_NAME))
    snapshot = {str(p.relative_to(jobs_dir)): p.read_bytes() for p in files}
    with contextlib.closing(sqlite3.connect(f"file:{jobs_dir / DB_NAME}?mode=ro", uri=True)) as db:
        # every column of a job but `synced`, the store's own note of which meta.json files are current
        jobs = db.execute("SELECT id, status, queue, owner, idem, enqueued_at, completed_at, owed, body FROM jobs")
        tags = db.execute("SELECT tag, job_id FROM tags")
        snapshot["store"] = repr(sorted(jobs.fetchall()) + sorted(tags.fetchall())).encode()
    return snapshot


def _check(server: ServerProcess, case: Case) -> str | None:
    """Why the answer to `case` is wrong, or None."""
    headers = {name: value.encode() for name, value in {**(JSON if case.body else {}), **case.headers}.items()}
    response = requests.request(case.method, server.url + case.path, data=case.body, headers=headers, timeout=30)
    label = f"{case.method} {case.path[:80]!r} body={case.body[:60] if case.body else None!r} {case.headers}"
    if not 400 <= response.status_code < 500:
        return f"{label}: {response.status_code} {response.text[:200]}"
    if not response.headers.get("Content-Type", "").startswith("application/json"):
        return f"{label}: {response.status_code} is not JSON"
    error = response.json()
    if not (isinstance(error.get("title"), str) and isinstance(error.get("description"), str)):
        return f"{label}: {error} is not {{title, description}}"
    if case.needle not in error["description"]:
        return f"{label}: {error['description']!r} does not name {case.needle!r}"
    return None


# --- the corpus --------------------------------------------------------------------------------------

BODIES: list[tuple[bytes, str]] = [
    (b"", "JSON"),
    (b"{", "JSON"),
    (b'{"a":}', "JSON"),
    (b'{"a": 1,}', "JSON"),
    (b"{} x", "JSON"),
    (b"{}{}", "JSON"),
    (b"/* c */ {}", "JSON"),
    (b"{'args': ['x']}", "JSON"),
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"args": ["\xc3\x28"]}', "UTF-8"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": Infinity}', "Infinity"),
    (b'{"a": -Infinity}', "Infinity"),
    (b'{"a": 1e999}', "too large"),
    (b'{"a": -1e999}', "too large"),
    (b'{"a": ' + b"9" * 19 + b"}", "digits"),
    (b'{"a": ' + b"9" * 4301 + b"}", "digits"),
    (b'{"a": -' + b"9" * 5000 + b"}", "digits"),
    (b'{"a": ' + b"[" * 33 + b"]" * 33 + b"}", "levels"),
    (b"[" * 1000 + b"]" * 1000, "levels"),
    (b"[" * 30000 + b"]" * 30000, "levels"),
    (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "levels"),
    (b'{"a": "\\ud800"}', "surrogate"),
    (b'{"a": "x\\udfff"}', "surrogate"),
    (b'{"\\ud800": 1}', "surrogate"),
    (b'{"a": ["\\udc00\\ud800"]}', "surrogate"),
    (b'{"a": 1, "a": 2}', "more than once"),
    (b"null", ""),
    (b"[]", ""),
    (b"1", ""),
    (b'"s"', ""),
    (b"true", ""),
    (b"{}", ""),
    (b'{"x": 1}', ""),
    (b" " * (MAX_BODY + 1), str(MAX_BODY)),
    (b'{"a": "' + b"x" * MAX_BODY + b'"}', str(MAX_BODY)),
]

# Fields of POST /jobs, each wrong in its own way (args is valid unless it is the field under test).
JOB_FIELDS: list[tuple[str, Any, str]] = [
    ("args", None, "args"),
    ("args", [], "args"),
    ("args", [""], "args"),
    ("args", [1], "args"),
    ("args", "echo", "args"),
    ("args", ["a\u0000b"], "args"),
    ("args", [["x"]], "args"),
    ("args", ["x"] * 4097, "args"),
    ("mime_type", "", "mime_type"),
    ("mime_type", "text", "mime_type"),
    ("mime_type", "text/plain\r\nX-Evil: 1", "mime_type"),
    ("mime_type", 5, "mime_type"),
    ("mime_type", "a/" + "b" * 300, "mime_type"),
    ("webhook", "ftp://x.example/", "webhook"),
    ("webhook", "http://", "webhook"),
    ("webhook", "http://[zz/", "webhook"),
    ("webhook", "http://[::1", "webhook"),
    ("webhook", "http://a\u0000b.example/", "webhook"),
    ("webhook", "http://a\tb.example/", "webhook"),
    ("webhook", "http://a\u007fb.example/", "webhook"),
    ("webhook", "http://a\u0085b.example/", "webhook"),
    ("webhook", "/relative", "webhook"),
    ("webhook", "http://a b/", "webhook"),
    ("webhook", "http://user@host.example/", "webhook"),
    ("webhook", "http://:80/", "webhook"),
    ("webhook", "http://x.example/" + "a" * 3000, "webhook"),
    ("webhook", 7, "webhook"),
    ("tags", "x", "tags"),
    ("tags", [1], "tags"),
    ("tags", ["a b"], "tags"),
    ("tags", [""], "tags"),
    ("tags", [f"t{i}" for i in range(17)], "tags"),
    ("priority", 1.5, "priority"),
    ("priority", "1", "priority"),
    ("priority", 10**6, "priority"),
    ("priority", True, "priority"),
    ("queue", "BAD", "queue"),
    ("queue", "", "queue"),
    ("queue", 5, "queue"),
    ("run_at", "tomorrow", "run_at"),
    ("run_at", "2026-13-45T00:00:00Z", "run_at"),
    ("run_at", "9999-12-31T23:59:59-23:59", "run_at"),
    ("run_at", 5, "run_at"),
    ("delay_seconds", -1, "delay_seconds"),
    ("delay_seconds", "5", "delay_seconds"),
    ("delay_seconds", 10**9, "delay_seconds"),
    ("after", ["x"], "after"),
    ("after", "0" * 32, "after"),
    ("after", ["0" * 32, "0" * 32], "after"),
    ("timeout_seconds", 0, "timeout_seconds"),
    ("timeout_seconds", -1, "timeout_seconds"),
    ("timeout_seconds", 10**9, "timeout_seconds"),
    ("timeout_seconds", "1", "timeout_seconds"),
    ("max_output_bytes", 0, "max_output_bytes"),
    ("max_output_bytes", 2**63, "max_output_bytes"),
    ("max_output_bytes", 1e30, "max_output_bytes"),
    ("max_output_bytes", 1.5, "max_output_bytes"),
    ("max_memory_bytes", 0, "max_memory_bytes"),
    ("max_memory_bytes", 1e300, "max_memory_bytes"),
    ("max_attempts", 0, "max_attempts"),
    ("max_attempts", 101, "max_attempts"),
    ("retry_backoff_seconds", -1, "retry_backoff_seconds"),
    ("retry_backoff_seconds", 4000, "retry_backoff_seconds"),
    ("env", [], "env"),
    ("env", {"1A": "x"}, "env"),
    ("env", {"A": 1}, "env"),
    ("env", {"PROCQ_X": "y"}, "PROCQ_X"),
    ("env", {"A": "a\u0000"}, "env"),
    ("env", {"A-B": "x"}, "env"),
    ("cwd", "/", "cwd"),
    ("cwd", "../", "cwd"),
    ("cwd", "a\u0000", "cwd"),
    ("cwd", "x" * 2000, "cwd"),
    ("cwd", 5, "cwd"),
    ("webhook_events", ["x"], "webhook_events"),
    ("webhook_events", ["start"], "webhook_events"),
    ("webhook_events", ["completed", "completed"], "webhook_events"),
    ("unknown_field", 1, "fields"),
]
# Literal JSON the json module cannot produce from Python values.
JOB_LITERALS: list[tuple[str, str, str]] = [
    ("delay_seconds", "NaN", "delay_seconds"),
    ("timeout_seconds", "NaN", "timeout_seconds"),
    ("timeout_seconds", "Infinity", "timeout_seconds"),
    ("priority", "1" * 30, "priority"),
    ("max_output_bytes", "9" * 4400, "max_output_bytes"),
    ("retry_backoff_seconds", "-Infinity", "retry_backoff_seconds"),
    ("args", '["echo", "\\ud800"]', "args[1]"),
    ("mime_type", '"text/\\udfff"', "mime_type"),
    ("env", '{"A": "\\ud800"}', "env.A"),
    ("tags", '["\\udc00"]', "tags[0]"),
    ("webhook", '"http://\\ud800.example/"', "webhook"),
]
BAD_IDS = ["nope", "CON", "nul.txt", "A" * 32, "0" * 31, "0" * 33, "..%2Fmeta.json", "%00", "x" * 1000, "g" * 32]
CROSS_SITE = [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Host": "evil.example"},
    {"Host": "127.0.0.1.evil.example:80"},
]
QUERIES = [
    ("/jobs", "limit=0"),
    ("/jobs", "limit=501"),
    ("/jobs", "limit=%C2%B2"),
    ("/jobs", "limit=" + "9" * 5000),
    ("/jobs", "limit=1e3"),
    ("/jobs", "limit=0x10"),
    ("/jobs", "status=RUNNING"),
    ("/jobs", "tag=a%20b"),
    ("/jobs", "cursor=%00"),
    ("/jobs", "cursor=" + "x" * 100),
    ("/jobs/{id}/logs", "offset=-1"),
    ("/jobs/{id}/logs", "offset=%C2%B2"),
    ("/jobs/{id}/logs", "offset=" + "9" * 30),
    ("/jobs/{id}/logs", "offset=" + "9" * 5000),
    ("/jobs/{id}/logs", "stream=meta"),
    ("/jobs/{id}/logs", "follow=maybe"),
]
LAST_EVENT_IDS = ["²", "٣", "9" * 5000, "9" * 30, "-1", "abc", "1e3", "1 2", "1_000"]


def corpus(job_id: str, allowed: str) -> list[Case]:
    cases: list[Case] = []
    for route, path in (("/jobs", "/jobs"), ("/queues/{name}", "/queues/default"), ("/admin/keys", "/admin/keys")):
        method = "PUT" if route.startswith("/queues") else "POST"
        cases += [Case(method, route, path, body, needle=needle) for body, needle in BODIES]
    for name, value, needle in JOB_FIELDS:
        body = {"args": [allowed], name: value} if name != "args" else {name: value}
        if value is None:
            body.pop(name)
        cases.append(Case("POST", "/jobs", "/jobs", json.dumps(body).encode(), needle=needle))
    for name, literal, needle in JOB_LITERALS:
        body = (
            f'{{"args": [{json.dumps(allowed)}], "{name}": {literal}}}' if name != "args" else f'{{"args": {literal}}}'
        )
        cases.append(Case("POST", "/jobs", "/jobs", body.encode(), needle=needle))
    valid = json.dumps({"args": [allowed]}).encode()
    for key in ("", "k" * 300, "é"):
        cases.append(Case("POST", "/jobs", "/jobs", valid, {"Idempotency-Key": key}, "Idempotency-Key"))
    cases.append(Case("POST", "/jobs", "/jobs", valid, {"Idempotency-Key": "\x01"}))  # waitress: invalid header
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b", ""):
        cases.append(Case("POST", "/jobs", "/jobs", valid, {"Content-Type": content_type}, "application/json"))
    for name in ("BAD", "a" * 33, "a b", "%00", "é"):
        cases.append(Case("PUT", "/queues/{name}", f"/queues/{name}", b'{"paused": true}', needle="queue"))
    for body in (b'{"paused": "yes"}', b'{"parallelism": 0}', b'{"parallelism": 1.5}', b'{"parallelism": NaN}'):
        cases.append(Case("PUT", "/queues/{name}", "/queues/default", body))
    for body in (b'{"name": "\\ud800", "scopes": ["admin"]}', b'{"name": "x", "scopes": ["root"]}'):
        cases.append(Case("POST", "/admin/keys", "/admin/keys", body))
    by_id = [("GET", "status"), ("GET", "result"), ("GET", "logs"), ("PUT", "cancel"), ("POST", "rerun")]
    for bad in BAD_IDS:
        cases += [Case(method, f"/jobs/{{job_id}}/{suffix}", f"/jobs/{bad}/{suffix}") for method, suffix in by_id]
        cases.append(Case("DELETE", "/jobs/{job_id}", f"/jobs/{bad}"))
        cases.append(Case("DELETE", "/admin/keys/{key_id}", f"/admin/keys/{bad}"))
    for template, query in QUERIES:
        route = template.replace("{id}", "{job_id}")
        cases.append(Case("GET", route, f"{template.replace('{id}', job_id)}?{query}", needle=query.split("=")[0]))
    for value in LAST_EVENT_IDS:
        path = f"/jobs/{job_id}/logs?follow=1"
        cases.append(Case("GET", "/jobs/{job_id}/logs", path, headers={"Last-Event-ID": value}, needle="Last-Event-ID"))
    for key_id in ("0123456789abcdef", "fedcba9876543210"):  # well formed, unknown: 404 and no keys file
        cases.append(Case("DELETE", "/admin/keys/{key_id}", f"/admin/keys/{key_id}", needle=key_id))
    for name in ("..%2F..%2Fapi%2Fapp.py", "nope.js", "%00", "app.js%00.css"):
        cases.append(Case("GET", "/ui/{name}", f"/ui/{name}"))
    # Every route, the real job's where there is one: another site's page, or a rebound DNS name.
    for route, methods in _routes().items():
        path = route.replace("{job_id}", job_id).replace("{name}", "default").replace("{key_id}", "k" * 8)
        for method in methods:
            cases += [Case(method, route, path, headers=headers) for headers in CROSS_SITE]
            if method in ("POST", "PUT", "DELETE"):
                cases.append(Case(method, route, path, b"{}", {"Content-Type": "text/plain"}, "application/json"))
    return cases


def _routes() -> dict[str, list[str]]:
    app = create_app(None, Path("/nonexistent"))
    return {
        route.path: sorted({m.method for m in route.methods if not m.internal})
        for route in falcon.inspect.inspect_routes(app)
    }


# --- the tests ---------------------------------------------------------------------------------------


def test_every_route_answers_hostile_input_with_a_json_4xx_and_leaves_the_jobs_directory_as_it_was(
    server: tuple[ServerProcess, str, str],
) -> None:
    process, job_id, allowed = server
    cases = corpus(job_id, allowed)
    assert len(cases) >= 300
    assert {case.route for case in cases} == set(_routes()), "every route gets hostile input"
    before = _snapshot(process.jobs_dir)
    failures = [problem for case in cases if (problem := _check(process, case))]
    assert failures == [], f"{len(failures)} of {len(cases)} answers were wrong:\n" + "\n".join(failures[:20])
    assert _snapshot(process.jobs_dir) == before
    assert process.get("/jobs").status_code == 200 and process.get("/health").status_code == 200
    errors = [line for line in process.log().splitlines() if " ERROR " in line or "unexpected error" in line]
    assert errors == [], errors[:5]


def test_a_job_with_nan_or_a_lone_surrogate_is_refused_so_no_job_can_vanish_at_restart(
    server: tuple[ServerProcess, str, str],
) -> None:
    process, _, allowed = server
    before = _snapshot(process.jobs_dir)
    for body, field_name in (
        (f'{{"args": ["{allowed}"], "timeout_seconds": NaN}}', "timeout_seconds"),
        (f'{{"args": ["{allowed}", "\\ud800"]}}', "args[1]"),
    ):
        response = process.post("/jobs", data=body.encode(), headers=JSON)
        assert response.status_code == 400 and field_name in response.json()["description"], response.text
    assert _snapshot(process.jobs_dir) == before
    assert process.get("/jobs").status_code == 200


def test_the_inputs_that_once_answered_500_answer_400(start_server: Any) -> None:
    process = start_server()  # the default body limit, so 100,000 brackets reach the parser
    allowed = "true"
    job_id = process.submit(["true"])["id"]
    submits = [
        json.dumps({"args": [allowed], "webhook": "http://[zz/"}).encode(),
        b'{"args": ["x"], "priority": ' + b"1" * 4301 + b"}",
        b'{"args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        f'{{"args": ["{allowed}"], "delay_seconds": NaN}}'.encode(),
    ]
    for body in submits:
        response = process.post("/jobs", data=body, headers=JSON)
        assert response.status_code == 400, (body[:60], response.text)
    for value in ("²", "9" * 5000):
        response = process.get(f"/jobs/{job_id}/logs?follow=1", headers={"Last-Event-ID": value})
        assert response.status_code == 400 and "Last-Event-ID" in response.json()["description"]
    assert process.stop() == 0


@pytest.mark.timeout(240)
def test_schemathesis_negative_data_is_refused_on_every_route_and_changes_nothing(
    start_server: Any, jobs_dir: Path, tmp_path: Path
) -> None:
    """Bodies, queries, headers and path parameters that break the documented schema, generated from
    /openapi.json: every one must be a 4xx (negative_data_rejection) and nothing may be written."""
    pytest.importorskip("schemathesis", reason="schemathesis is in the test extra: pip install -e '.[test]'")
    only = tmp_path / "procq-negative-allowed-only"
    only.write_text("#!/bin/sh\n")
    only.chmod(0o755)
    _, key = make_key(jobs_dir, "admin", name="negative")  # so a request without the key is a refusal too
    process = start_server("--allow-command", str(only), "--webhook-deny-private")
    config = tmp_path / "schemathesis.toml"
    refusals = ", ".join(f'"{code}"' for code in (400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 429))
    config.write_text(
        f'headers = {{ Authorization = "Bearer {key}" }}\n\n'
        f"[checks.negative_data_rejection]\nexpected-statuses = [{refusals}]\n",
        encoding="utf-8",
    )
    before = _snapshot(jobs_dir)
    cmd = [
        sys.executable,
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{process.url}/openapi.json",
        "--mode",
        "negative",
        "--checks",
        "negative_data_rejection,not_a_server_error,content_type_conformance",
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        os.environ.get("FUZZ_EXAMPLES", "5"),
        "--exclude-path",
        "/events",  # an endless stream by design
        "--workers",
        "2",
        "--seed",
        os.environ.get("FUZZ_SEED", "20261123"),
        "--suppress-health-check",
        "too_slow",  # generating bodies is slow on a loaded machine; that is no fault of the server
        "--request-timeout",
        "20",  # answers take milliseconds; the margin is for a loaded machine
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=220, cwd=tmp_path)
    assert run.returncode == 0, f"schemathesis found problems:\n{run.stdout[:8000]}\n{run.stderr[-2000:]}"
    assert _snapshot(jobs_dir) == before
    assert process.stop() == 0
