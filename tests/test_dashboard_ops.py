"""The dashboard as an operator uses it, in real Chromium against a real server: live under steady load,
scheduled jobs, runs and webhook state, the queues view, filters in the URL, search, bulk actions."""

from __future__ import annotations

import re
import statistics
import threading
import time
from pathlib import Path

import pytest

from tests.browser import Browser, Page, expect, needs_browser, screenshot
from tests.features import create_admin_key
from tests.helpers import Receiver, ServerProcess, py, wait_until

SLEEPER = py("import time; time.sleep(60)")


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


def ids_shown(page: Page) -> list[str]:
    return page.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.id)")


@needs_browser
def test_under_a_steady_stream_of_submits_the_newest_job_appears_within_a_second(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#live")).to_have_text("live")
    submitted: list[str] = []
    stop = threading.Event()

    def stream() -> None:  # about ten submits a second until told to stop
        while not stop.is_set():
            submitted.append(server.submit(py("import time; time.sleep(0.2)"), tags=["load"])["id"])
            stop.wait(0.1)

    feeder = threading.Thread(target=stream, daemon=True)
    feeder.start()
    delays: list[float] = []
    try:
        wait_until(lambda: len(submitted) >= 10)
        for _ in range(8):
            newest, since = submitted[-1], time.monotonic()
            expect(page.locator(f'#jobs-body tr[data-id="{newest}"]')).to_be_visible(timeout=3_000)
            delays.append(time.monotonic() - since)
            # Cards and table are drawn from one refresh: the counts already include the top row.
            total, top = page.evaluate(
                """() => [
                  [...document.querySelectorAll('#counts .number')].reduce((n, e) => n + (+e.textContent || 0), 0),
                  document.querySelector('#jobs-body tr')?.dataset.id]"""
            )
            assert top in submitted and total >= submitted.index(top) + 1
            time.sleep(0.3)
        if len(delays) >= 6:
            screenshot(page, tmp_path, "dashboard-load.png", full_page=False)
    finally:
        stop.set()
        feeder.join(timeout=10)
    assert statistics.median(delays) <= 1.0, delays  # a debounce that never fires would time out above
    last = submitted[-1]
    expect(page.locator("#jobs-body tr").first).to_have_attribute("data-id", last, timeout=3_000)
    wait_until(lambda: server.get("/stats").json()["counts"]["COMPLETED"] == len(submitted), timeout=30)
    expect(page.locator('#counts [data-status="COMPLETED"] .number')).to_have_text(str(len(submitted)))
    expect(page.locator('#jobs-body tr[data-status="COMPLETED"]')).to_have_count(min(50, len(submitted)))


@needs_browser
def test_a_scheduled_job_says_when_it_will_start_rather_than_0s_ago(page: Page, server: ServerProcess) -> None:
    job = server.submit(py("pass"), delay_seconds=120)
    page.goto(server.url + "/")
    row = page.locator(f'tr[data-id="{job["id"]}"]')
    expect(row.locator(".when")).to_have_text("scheduled in 2m")
    expect(row.locator(".age")).to_have_text("0s ago")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    expect(page.locator("#job-waiting")).to_have_text("scheduled in 2m")
    expect(page.locator('#job-details [data-field="Runs at"] dd')).to_contain_text("(in 2m)")
    soon = server.submit(py("pass"), delay_seconds=40)
    page.goto(f"{server.url}/#/jobs/{soon['id']}")
    expect(page.locator("#job-waiting")).to_have_text(re.compile(r"scheduled in (39|40)s"))


@needs_browser
def test_run_again_is_offered_only_once_a_job_has_ended(page: Page, server: ServerProcess) -> None:
    running = server.submit(SLEEPER)
    server.wait_status(running["id"], "IN_PROGRESS")
    page.goto(f"{server.url}/#/jobs/{running['id']}")
    expect(page.locator("#job-state .word")).to_have_text("Running")
    expect(page.locator("#rerun-job")).to_be_disabled()
    server.put(f"/jobs/{running['id']}/cancel")
    expect(page.locator("#job-state .word")).to_have_text("Canceled")
    expect(page.locator("#rerun-job")).to_be_enabled()
    page.locator("#rerun-job").click()
    expect(page).not_to_have_url(f"{server.url}/#/jobs/{running['id']}")
    expect(page.locator('#job-details [data-field="Rerun of"] dd')).to_have_text(running["id"])
    server.put(f"/jobs/{page.url.rsplit('/', 1)[-1]}/cancel")


@needs_browser
def test_a_finished_job_with_empty_stderr_says_it_wrote_nothing(page: Page, server: ServerProcess) -> None:
    job = server.submit(py("print('out only')"))
    server.wait_status(job["id"], "COMPLETED")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    expect(page.locator("#log-state")).to_have_text("(finished: the job wrote nothing to stderr)")
    expect(page.locator("#job-log")).to_have_attribute("data-placeholder", "(empty)")


@needs_browser
def test_a_result_is_shown_and_downloaded_as_utf8(page: Page, server: ServerProcess) -> None:
    job = server.submit(py("import sys; sys.stdout.buffer.write('résultat ✓\\n'.encode())"))
    server.wait_status(job["id"], "COMPLETED")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    expect(page.locator("#job-result")).to_have_text("résultat ✓\n")
    with page.expect_download() as download:
        page.locator("#download-result").click()
    assert Path(download.value.path()).read_bytes() == "résultat ✓\n".encode()


@needs_browser
def test_the_job_page_shows_each_attempt_and_the_webhook_delivery(
    page: Page, server: ServerProcess, receiver: Receiver, tmp_path: Path
) -> None:
    flaky = "import sys; print('attempt failed', file=sys.stderr); sys.exit(3)"
    job = server.submit(py(flaky), max_attempts=2, retry_backoff_seconds=0, webhook=receiver.url)
    server.wait_status(job["id"], "FAILED")
    receiver.wait_for(1)
    wait_until(lambda: (server.status(job["id"]).get("webhook_delivery") or {}).get("state") == "delivered")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    runs = page.locator("#job-runs tr")
    expect(runs).to_have_count(2)
    expect(runs.nth(0).locator("td").nth(3)).to_have_text("3")
    expect(runs.nth(1).locator("td").nth(3)).to_have_text("3")
    expect(page.locator('#job-details [data-field="Attempts"] dd')).to_have_text("2 of at most 2")
    delivery = page.locator('#job-details [data-field="Webhook delivery"] dd')
    expect(delivery).to_contain_text("delivered")
    expect(delivery).to_contain_text("after 1 attempt")
    screenshot(page, tmp_path, "dashboard-runs.png")


@needs_browser
def test_a_pending_webhook_shows_its_last_error_and_next_attempt(page: Page, start_server, receiver: Receiver) -> None:
    server = start_server("--webhook-backoff", "30", "--webhook-backoff-cap", "60")
    receiver.fail_next = 100
    job = server.submit(py("pass"), webhook=receiver.url)
    wait_until(lambda: (server.status(job["id"]).get("webhook_delivery") or {}).get("last_error"))
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    delivery = page.locator('#job-details [data-field="Webhook delivery"] dd')
    expect(delivery).to_contain_text("pending (1 attempt, next attempt")
    expect(delivery).to_contain_text("500")


@needs_browser
def test_a_run_cut_short_by_a_restart_is_shown_as_interrupted(page: Page, start_server, jobs_dir: Path) -> None:
    first = start_server()
    job = first.submit(SLEEPER)
    first.wait_status(job["id"], "IN_PROGRESS")
    assert first.stop() == 0
    second = start_server("--workers", "1")
    second.wait_status(job["id"], "IN_PROGRESS")
    page.goto(f"{second.url}/#/jobs/{job['id']}")
    expect(page.locator('#job-details [data-field="Interrupted"] dd')).not_to_be_empty()
    expect(page.locator("#job-runs tr")).to_have_count(1)  # the first, cut-short run
    second.put(f"/jobs/{job['id']}/cancel")


@needs_browser
def test_the_queues_view_shows_each_queue_and_pauses_and_resumes_it(page: Page, start_server, tmp_path: Path) -> None:
    server = start_server("--queue", "gpu=1")
    running = server.submit(SLEEPER, queue="gpu")
    waiting = server.submit(py("pass"), queue="gpu")
    server.wait_status(running["id"], "IN_PROGRESS")
    page.goto(f"{server.url}/#/queues")
    gpu = page.locator('#queues-body tr[data-queue="gpu"]')
    expect(gpu.locator(".queued")).to_have_text("1")
    expect(gpu.locator(".running")).to_have_text("1")
    expect(gpu.locator(".parallelism input")).to_have_value("1")
    expect(page.locator('#queues-body tr[data-queue="default"] .parallelism input')).to_have_value("2")
    gpu.locator("button.pause").click()
    expect(gpu).to_have_attribute("data-paused", "true")
    queues = {q["name"]: q for q in server.get("/queues").json()["queues"]}
    assert queues["gpu"]["paused"] is True
    screenshot(page, tmp_path, "dashboard-queues.png")
    server.put(f"/jobs/{running['id']}/cancel")
    time.sleep(0.5)
    assert server.status(waiting["id"])["status"] == "IN_QUEUE"  # paused: nothing new starts
    gpu.locator("button.resume").click()
    expect(gpu).to_have_attribute("data-paused", "false")
    server.wait_status(waiting["id"], "COMPLETED")
    gpu.locator(".parallelism input").fill("3")
    gpu.locator("button.save").click()
    expect(gpu.locator(".parallelism input")).to_have_value("3")
    assert {q["name"]: q for q in server.get("/queues").json()["queues"]}["gpu"]["parallelism"] == 3


@needs_browser
def test_filters_are_kept_in_the_url_and_survive_a_reload(page: Page, server: ServerProcess) -> None:
    failed = server.submit(py("raise SystemExit(2)"), tags=["night"])
    done = server.submit(py("pass"), tags=["night"])
    for job in (failed, done):
        server.wait_status(job["id"], "COMPLETED", "FAILED")
    page.goto(server.url + "/")
    expect(page.locator("#jobs-body tr")).to_have_count(2)
    page.locator('#state-filters [data-status="FAILED"]').click()
    page.locator("#tag-filter").fill("night")
    expect(page).to_have_url(f"{server.url}/#/?status=FAILED&tag=night")
    page.reload()
    expect(page.locator('#state-filters [data-status="FAILED"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#tag-filter")).to_have_value("night")
    assert wait_until(lambda: ids_shown(page) == [failed["id"]])


@needs_browser
def test_bulk_actions_cancel_rerun_and_delete_the_ticked_jobs(page: Page, server: ServerProcess) -> None:
    sleepers = [server.submit(SLEEPER, tags=["bulk"]) for _ in range(2)]
    page.goto(server.url + "/?#/")
    for job in sleepers:
        page.locator(f'tr[data-id="{job["id"]}"] .pick input').check()
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    expect(page.locator("#bulk-delete")).to_be_disabled()  # nothing ticked has ended yet
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#bulk-cancel").click()
    expect(page.locator("#toast")).to_contain_text("Canceled 2")
    for job in sleepers:
        assert server.status(job["id"])["status"] == "CANCELED"
    expect(page.locator("#bulk")).to_be_hidden()
    page.locator("#select-all").check()
    page.locator("#bulk-rerun").click()
    expect(page.locator("#toast")).to_contain_text("Reran 2")
    reruns = [j for j in server.get("/jobs").json()["jobs"] if j.get("rerun_of")]
    assert sorted(j["rerun_of"] for j in reruns) == sorted(j["id"] for j in sleepers)
    for job in reruns:
        server.put(f"/jobs/{job['id']}/cancel")
    expect(page.locator('#jobs-body tr[data-status="CANCELED"]')).to_have_count(4)
    page.locator("#select-all").check()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#bulk-delete").click()
    expect(page.locator("#toast")).to_contain_text("Deleted 4")
    expect(page.locator("#jobs-body tr")).to_have_count(0)
    assert server.get("/jobs").json()["jobs"] == []


@needs_browser
def test_the_throughput_chart_is_drawn_at_once_from_the_servers_recent_history(
    page: Page, server: ServerProcess
) -> None:
    for job in [server.submit(py("pass")) for _ in range(3)]:
        server.wait_status(job["id"], "COMPLETED")
    history = server.get("/stats").json()["history"]
    assert sum(history["submitted"]) == 3 and sum(history["completed"]) == 3
    page.goto(server.url + "/")
    expect(page.locator("#spark")).to_have_attribute("data-points", str(len(history["submitted"])))
    expect(page.locator("#spark-note")).to_be_hidden()
    expect(page.locator("#spark polyline.submitted")).to_have_count(1)


@needs_browser
def test_search_finds_jobs_by_id_prefix_command_or_tag(page: Page, server: ServerProcess) -> None:
    render = server.submit(py("print('render frame')"), tags=["video"])
    other = server.submit(py("print('other work')"), tags=["misc"])
    for job in (render, other):
        server.wait_status(job["id"], "COMPLETED")
    page.goto(server.url + "/")
    expect(page.locator("#jobs-body tr")).to_have_count(2)
    search = page.locator("#search")
    for text, found in (("render frame", render), ("misc", other), (other["id"][:26], other)):
        search.fill(text)
        assert wait_until(lambda: ids_shown(page) == [found["id"]]), text  # noqa: B023 - used at once
    expect(page).to_have_url(re.compile(r"#/\?q="))
    search.fill("nothing like this")
    expect(page.locator("#jobs-empty")).to_have_text("No jobs match these filters.")


@needs_browser
def test_with_a_scoped_key_the_cards_count_only_the_callers_jobs(
    browser: Browser, start_server, jobs_dir: Path
) -> None:
    admin = create_admin_key(jobs_dir)
    server = start_server()
    as_admin = {"Authorization": f"Bearer {admin}"}
    made = server.post("/admin/keys", json={"name": "team", "scopes": ["jobs:submit", "jobs:read"]}, headers=as_admin)
    team = made.json()["key"]
    for _ in range(3):
        server.post("/jobs", json={"args": py("pass")}, headers=as_admin)
    mine = server.post("/jobs", json={"args": py("pass")}, headers={"Authorization": f"Bearer {team}"}).json()
    wait_until(lambda: server.get("/stats", headers=as_admin).json()["counts"]["COMPLETED"] == 4)
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.add_init_script(f"localStorage.setItem('procq.apiKey', {team!r})")
        tab.goto(server.url + "/")
        expect(tab.locator(f'tr[data-id="{mine["id"]}"]')).to_be_visible()
        expect(tab.locator("#jobs-body tr")).to_have_count(1)
        expect(tab.locator('#counts [data-status="COMPLETED"] .number')).to_have_text("1")
    finally:
        context.close()
