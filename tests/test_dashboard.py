"""The web dashboard in a real headless Chromium (Debian's package, driven by Playwright), against a real
server: it loads, shows jobs live, follows a log, cancels with its button, submits from its form."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from tests.browser import UI, Browser, Page, expect, needs_browser, screenshot
from tests.features import create_admin_key, require_submit_field
from tests.helpers import ServerProcess, py, wait_until

TICKER = py(
    "import sys, time\nfor i in range(300):\n    print(f'tick {i}', file=sys.stderr, flush=True)\n    time.sleep(0.2)"
)


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


@needs_browser
def test_a_job_shows_up_live_its_log_follows_and_the_button_cancels_it(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#live")).to_have_text("live")
    job = server.submit(TICKER, tags=["demo"])
    row = page.locator(f'tr[data-id="{job["id"]}"]')
    expect(row).to_be_visible(timeout=2_000)  # pushed by /events, not found by a reload
    expect(row.locator(".badge .word")).to_have_text("Running", timeout=5_000)
    expect(row.locator(".cmd")).to_contain_text("tick")

    row.locator(".cmd a").click()
    expect(page.locator("#job-view")).to_be_visible()
    log = page.locator("#job-log")
    expect(log).to_contain_text("tick 0")
    expect(log).to_contain_text("tick 8")  # about 1.6 s later: the page follows the stream
    expect(page.locator('#job-details [data-field="Submitted"]')).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#cancel-job").click()
    expect(page.locator("#job-state .word")).to_have_text("Canceled", timeout=15_000)
    assert server.status(job["id"])["status"] == "CANCELED"
    expect(page.locator("#log-state")).to_have_text("(finished)")
    expect(page.locator("#cancel-job")).to_be_disabled()
    screenshot(page, tmp_path, "dashboard-job.png")


@needs_browser
def test_the_overview_counts_states_and_filters_by_state_and_tag(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    done = server.submit(py("print('result text')"), tags=["nightly"])
    failed = server.submit(py("import sys; print('oops', file=sys.stderr); sys.exit(2)"), tags=["nightly"])
    for job in (done, failed):
        server.wait_status(job["id"], "COMPLETED", "FAILED")
    canceled = server.submit(py("import time; time.sleep(60)"), tags=["adhoc"])
    server.wait_status(canceled["id"], "IN_PROGRESS")
    server.put(f"/jobs/{canceled['id']}/cancel")
    running = [server.submit(TICKER, tags=["render"]) for _ in range(2)]
    queued = server.submit(py("pass"), tags=["render"])  # two workers: this one waits
    for job in running:
        server.wait_status(job["id"], "IN_PROGRESS")

    page.goto(server.url + "/")
    counts = page.locator("#counts")
    expect(counts.locator('[data-status="COMPLETED"] .number')).to_have_text("1")
    expect(counts.locator('[data-status="FAILED"] .number')).to_have_text("1")
    expect(counts.locator('[data-status="CANCELED"] .number')).to_have_text("1")
    expect(counts.locator('[data-status="IN_PROGRESS"] .number')).to_have_text("2")
    expect(counts.locator('[data-status="IN_QUEUE"] .number')).to_have_text("1")
    expect(page.locator("#workers-busy")).to_have_text("2")
    expect(page.locator("#workers-total")).to_have_text("2")
    expect(page.locator("#jobs-body tr")).to_have_count(6)
    for word in ("Queued", "Running", "Completed", "Failed", "Canceled"):  # colours come with words
        expect(page.locator("#jobs-body .badge .word", has_text=word).first).to_be_visible()
    expect(page.locator("#spark polyline.completed")).to_have_count(1)  # drawn from the server's history
    screenshot(page, tmp_path, "dashboard.png")

    page.locator('#state-filters [data-status="FAILED"]').click()
    expect(page.locator("#jobs-body tr")).to_have_count(1)
    expect(page.locator(f'#jobs-body tr[data-id="{failed["id"]}"]')).to_be_visible()
    page.locator("#state-filters button", has_text="All").click()
    page.locator("#tag-filter").fill("render")
    expect(page.locator("#jobs-body tr")).to_have_count(3)
    assert {queued["id"], *(j["id"] for j in running)} == set(
        page.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    )
    for job in [*running, queued]:
        server.put(f"/jobs/{job['id']}/cancel")


@needs_browser
def test_a_finished_job_page_shows_its_result_and_downloads_it(page: Page, server: ServerProcess) -> None:
    job = server.submit(py("print('the answer is 42')"))
    server.wait_status(job["id"], "COMPLETED")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    expect(page.locator("#job-state .word")).to_have_text("Completed")
    expect(page.locator('#job-details [data-field="Exit code"] dd')).to_have_text("0")
    expect(page.locator("#job-result")).to_have_text("the answer is 42\n")
    usage = server.status(job["id"]).get("resources")  # None when the run left no usage record
    if usage:
        cpu = usage["cpu_user_seconds"] + usage["cpu_system_seconds"]
        shown = page.locator('#job-details [data-field="CPU time"] dd')
        expect(shown).to_contain_text(" s")
        assert abs(float(shown.inner_text().split()[0]) - cpu) <= 0.006
        peak = page.locator('#job-details [data-field="Peak memory"] dd')
        if usage["peak_rss_bytes"]:  # a job shorter than the sampling interval may have none
            expect(peak).to_have_text(f"{usage['peak_rss_bytes'] / (1 << 20):.1f} MiB")
        else:
            expect(peak).to_have_count(0)
    with page.expect_download() as download:
        page.locator("#download-result").click()
    path = download.value.path()
    assert Path(path).read_text() == "the answer is 42\n"
    assert download.value.suggested_filename == f"{job['id']}.txt"


@needs_browser
def test_the_form_submits_args_as_a_list(page: Page, server: ServerProcess) -> None:
    page.goto(server.url + "/")
    page.locator("#new-job").click()
    args = [sys.executable, "-c", "import sys; print(sys.argv[1:])", "two words", ""]
    page.locator("#arg-list input").first.fill(args[0])
    for value in args[1:]:
        page.locator("#add-arg").click()
        page.locator("#arg-list input").last.fill(value)
    page.locator("#add-arg").click()  # a trailing empty box is dropped, an empty argument in between is kept
    page.locator("#arg-list input").nth(4).fill("")
    page.locator("#arg-list input").last.fill("end")
    page.locator('#submit-form input[name="tags"]').fill("from-form, web")
    page.locator("#submit-go").click()
    expect(page.locator("#job-view")).to_be_visible()
    job_id = wait_until(lambda: page.url.rsplit("/", 1)[-1] if "#/jobs/" in page.url else None)
    job = server.wait_status(job_id, "COMPLETED")
    assert job["args"] == [*args, "end"] and job["tags"] == ["from-form", "web"]
    expect(page.locator("#job-result")).to_have_text("['two words', '', 'end']\n")


@needs_browser
def test_the_form_shows_the_servers_reason_for_a_refused_job(page: Page, server: ServerProcess) -> None:
    page.goto(server.url + "/")
    page.locator("#new-job").click()
    page.locator("#arg-list input").first.fill("echo")
    page.locator('#submit-form input[name="tags"]').fill("not a valid tag!")
    page.locator("#submit-go").click()
    expect(page.locator("#submit-error")).to_contain_text("tags")
    expect(page.locator("#submit-dialog")).to_be_visible()


@needs_browser
def test_on_a_phone_nothing_overflows_and_states_are_words(browser: Browser, server: ServerProcess) -> None:
    job = server.submit(py("raise SystemExit(1)"), tags=["phone"])
    server.wait_status(job["id"], "FAILED")
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone = context.new_page()
        phone.goto(server.url + "/")
        expect(phone.locator("#jobs-body .badge .word").first).to_have_text("Failed")
        expect(phone.locator(f'tr[data-id="{job["id"]}"] .cmd')).to_be_visible()
        width = phone.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"page is {width[0]} px wide on a {width[1]} px screen"
    finally:
        context.close()


def test_the_dashboard_and_its_assets_are_served_from_the_package(server: ServerProcess) -> None:
    index = server.get("/")
    assert index.status_code == 200 and index.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in index.headers["Content-Security-Policy"]
    for name, kind in (("main.js", "text/javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        asset = server.get(f"/ui/{name}")
        assert asset.status_code == 200 and asset.headers["Content-Type"].startswith(kind), name
        assert f"/ui/{name}" in index.text
    for module in UI.glob("*.js"):  # every module main.js imports is served too, as JavaScript
        answer = server.get(f"/ui/{module.name}")
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/javascript")
    assert "http" not in index.text.replace(server.url, "")  # nothing from a CDN: it works offline
    again = server.get("/ui/main.js", headers={"If-None-Match": asset_etag(server, "main.js")})
    assert again.status_code == 304


def test_unknown_and_escaping_asset_names_are_json_404s(server: ServerProcess) -> None:
    for path in ("/ui/nope.js", "/ui/..%2Fdashboard.py", "/ui/%2E%2E%2Fapp.py", "/ui/index.html"):
        answer = requests.get(server.url + path, timeout=10)
        assert answer.status_code == 404, path
        assert answer.json()["title"], path


def asset_etag(server: ServerProcess, name: str) -> str:
    return server.get(f"/ui/{name}").headers["ETag"]


@needs_browser
def test_the_page_asks_for_a_key_when_the_server_needs_one_and_keeps_it(
    page: Page, start_server, jobs_dir: Path
) -> None:
    key = create_admin_key(jobs_dir)
    server = start_server()
    made = server.post("/jobs", json={"args": py("print('secret work')")}, headers={"Authorization": f"Bearer {key}"})
    job = made.json()
    page.goto(server.url + "/")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    page.locator("#key-input").fill(key)
    page.locator("#key-form button[type=submit]").click()
    expect(dialog).to_be_hidden()
    expect(page.locator(f'tr[data-id="{job["id"]}"]')).to_be_visible()
    expect(page.locator("#live")).to_have_text("live")  # the event stream carries the key too
    assert page.evaluate("() => localStorage.getItem('procq.apiKey')") == key
    page.reload()
    expect(page.locator(f'tr[data-id="{job["id"]}"] .badge .word')).to_have_text("Completed")
    expect(dialog).to_be_hidden()


@needs_browser
def test_the_form_sends_priority_delay_and_timeout(page: Page, server: ServerProcess) -> None:
    require_submit_field(server, "priority", 1)
    page.goto(server.url + "/")
    page.locator("#new-job").click()
    page.locator("#arg-list input").first.fill(sys.executable)
    for value in ("-c", "print('later')"):
        page.locator("#add-arg").click()
        page.locator("#arg-list input").last.fill(value)
    form = page.locator("#submit-form")
    form.locator('input[name="priority"]').fill("9")
    form.locator('input[name="delay_seconds"]').fill("0.5")
    form.locator('input[name="timeout_seconds"]').fill("30")
    page.locator("#submit-go").click()
    expect(page.locator("#job-view")).to_be_visible()
    job_id = wait_until(lambda: page.url.rsplit("/", 1)[-1] if "#/jobs/" in page.url else None)
    job = server.wait_status(job_id, "COMPLETED")
    assert (job["priority"], job["timeout_seconds"]) == (9, 30) and job["run_at"]
    expect(page.locator('#job-details [data-field="Priority"] dd')).to_have_text("9")
    expect(page.locator('#job-details [data-field="Timeout"] dd')).to_have_text("30 s")
