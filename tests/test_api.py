"""The HTTP contract through falcon.testing over a real Dispatcher: codes, bodies, errors."""

from __future__ import annotations

from pathlib import Path

import falcon.testing
import pytest

from procq.actors.dispatch.dispatcher import Dispatcher
from procq.actors.settings import Settings
from procq.api.app import create_app
from tests.helpers import py, wait_until


@pytest.fixture
def client(settings: Settings) -> falcon.testing.TestClient:
    dispatcher = Dispatcher.start(settings).proxy()
    return falcon.testing.TestClient(create_app(dispatcher, settings.jobs_dir, max_body_bytes=4096))


def _submit(client: falcon.testing.TestClient, body: dict) -> dict:
    response = client.simulate_post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json


def _wait(client: falcon.testing.TestClient, job_id: str, status: str) -> dict:
    return wait_until(lambda: (j := client.simulate_get(f"/jobs/{job_id}/status").json)["status"] == status and j)


def test_submit_answers_201_with_location_and_the_job_is_on_disk(client, jobs_dir: Path) -> None:
    response = client.simulate_post("/jobs", json={"args": ["true"]})
    assert response.status_code == 201
    job = response.json
    assert response.headers["Location"] == f"/jobs/{job['id']}/status"
    assert job["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert job["mime_type"] == "text/plain" and job["webhook"] is None and job["attempts"] == 0
    assert job["enqueued_at"].endswith("Z") and job["completed_at"] is None
    assert (jobs_dir / job["id"] / "meta.json").is_file()


def test_result_is_the_exact_stdout_with_the_jobs_mime_type(client) -> None:
    script = "import sys; sys.stdout.buffer.write(bytes(range(256)) + b'{\"a\": 1}')"
    job = _submit(client, {"args": py(script), "mime_type": "application/x-custom; v=2"})
    _wait(client, job["id"], "COMPLETED")
    response = client.simulate_get(f"/jobs/{job['id']}/result")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-custom; v=2"
    assert response.content == bytes(range(256)) + b'{"a": 1}'


def test_status_of_a_finished_job_has_every_contract_field(client) -> None:
    job = _submit(client, {"args": py("raise SystemExit(4)")})
    done = _wait(client, job["id"], "FAILED")
    for field in (
        "id",
        "args",
        "mime_type",
        "webhook",
        "status",
        "pid",
        "exit_code",
        "error",
        "attempts",
        "enqueued_at",
        "started_at",
        "completed_at",
    ):
        assert field in done
    assert done["exit_code"] == 4 and done["attempts"] == 1 and done["pid"] > 0
    assert done["enqueued_at"] <= done["started_at"] <= done["completed_at"]


def test_result_of_an_unfinished_or_failed_job_is_a_409_naming_the_state(client) -> None:
    running = _submit(client, {"args": py("import time; time.sleep(30)")})
    _wait(client, running["id"], "IN_PROGRESS")
    response = client.simulate_get(f"/jobs/{running['id']}/result")
    assert response.status_code == 409 and "IN_PROGRESS" in response.json["description"]
    assert client.simulate_put(f"/jobs/{running['id']}/cancel").status_code == 200
    response = client.simulate_get(f"/jobs/{running['id']}/result")
    assert response.status_code == 409 and "CANCELED" in response.json["description"]


def test_cancel_returns_the_canceled_job_after_its_process_is_gone(client) -> None:
    job = _submit(client, {"args": py("import time; time.sleep(30)")})
    running = _wait(client, job["id"], "IN_PROGRESS")
    response = client.simulate_put(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json["status"] == "CANCELED" and response.json["completed_at"]
    import psutil

    assert not psutil.pid_exists(running["pid"]) or psutil.Process(running["pid"]).status() == psutil.STATUS_ZOMBIE


def test_cancel_of_a_finished_job_is_a_409(client) -> None:
    job = _submit(client, {"args": ["true"]})
    _wait(client, job["id"], "COMPLETED")
    response = client.simulate_put(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.json["title"] and "COMPLETED" in response.json["description"]


@pytest.mark.parametrize("path", ["/jobs/{}/status", "/jobs/{}/result", "/jobs/{}/cancel"])
@pytest.mark.parametrize("job_id", ["f" * 32, "..%2F..%2Fetc", "CON", "0" * 31])
def test_unknown_or_malformed_ids_are_404_json(client, path: str, job_id: str) -> None:
    method = client.simulate_put if path.endswith("cancel") else client.simulate_get
    response = method(path.format(job_id))
    assert response.status_code == 404
    assert response.json["title"] and response.json["description"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"[1, 2]", "JSON object"),
        (b"{not json", "JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b"{}", "'args' is a required property"),
        (b'{"args": []}', "args"),
        (b'{"args": ["echo", 3]}', "args[1]"),
        (b'{"args": "echo hi"}', "args"),
        (b'{"args": [""]}', "args[0]"),
        (b'{"args": ["a\\u0000b"]}', "NUL"),
        (b'{"args": ["true"], "priority2": 1}', "priority2"),
        (b'{"args": ["true"], "mime_type": 5}', "mime_type"),
        (b'{"args": ["true"], "mime_type": "text/plain\\r\\nX-Evil: 1"}', "mime_type"),
        (b'{"args": ["true"], "mime_type": "nonsense"}', "mime_type"),
        (b'{"args": ["true"], "webhook": "ftp://example.com/x"}', "webhook"),
        (b'{"args": ["true"], "webhook": "/relative"}', "webhook"),
        (b'{"args": ["true"], "webhook": "http://"}', "webhook"),
        (b'{"args": ["true"], "webhook": 7}', "webhook"),
    ],
)
def test_bad_submissions_are_400_saying_what_to_fix_and_change_nothing(
    client, jobs_dir: Path, body: bytes, needle: str
) -> None:
    response = client.simulate_post("/jobs", body=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert needle in response.json["description"]
    assert [p for p in jobs_dir.iterdir() if not p.name.startswith(".")] == []


def test_a_body_over_the_limit_is_413_json(client, jobs_dir: Path) -> None:
    body = b'{"args": ["echo", "' + b"x" * 5000 + b'"]}'
    response = client.simulate_post("/jobs", body=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "4096" in response.json["description"]
    assert [p for p in jobs_dir.iterdir() if not p.name.startswith(".")] == []  # the keeper's files are dot files


def test_unknown_routes_and_methods_are_json_whatever_the_accept_header(client) -> None:
    response = client.simulate_get("/nope", headers={"Accept": "application/xml"})
    assert response.status_code == 404 and response.headers["Content-Type"] == "application/json"
    assert "/nope" in response.json["description"]
    response = client.simulate_delete("/jobs")
    assert response.status_code == 405 and "POST" in response.json["description"]


def test_a_disk_that_refuses_the_job_gives_a_json_500_and_the_server_goes_on(settings: Settings) -> None:
    ids = iter(["a" * 32, "b" * 32])
    dispatcher = Dispatcher.start(settings, new_id=lambda: next(ids)).proxy()
    client = falcon.testing.TestClient(create_app(dispatcher, settings.jobs_dir))
    (settings.jobs_dir / f".new-{'a' * 32}").write_text("in the way")  # its directory cannot be built
    response = client.simulate_post("/jobs", json={"args": ["true"]})
    assert response.status_code == 500 and "Could not create" in response.json["description"]
    assert client.simulate_get(f"/jobs/{'a' * 32}/status").status_code == 404
    assert client.simulate_post("/jobs", json={"args": ["true"]}).status_code == 201
    assert client.simulate_get("/health").status_code == 200


def test_health_reports_ready(client) -> None:
    response = client.simulate_get("/health")
    assert response.status_code == 200 and response.json["status"] == "ok"


def test_a_stopping_server_refuses_new_jobs_with_a_json_503(settings: Settings) -> None:
    dispatcher = Dispatcher.start(settings).proxy()
    client = falcon.testing.TestClient(create_app(dispatcher, settings.jobs_dir))
    dispatcher.shutdown().get(timeout=10)
    response = client.simulate_post("/jobs", json={"args": ["true"]})
    assert response.status_code == 503 and "shutting down" in response.json["description"]
    assert response.headers["Retry-After"] == "1"
