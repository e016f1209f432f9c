"""The dashboard's GPU lanes in real Chromium: which job runs on which GPU, and counted resources in use."""

from __future__ import annotations

from pathlib import Path

from tests.browser import Page, expect, needs_browser, screenshot  # browser and page fixtures: conftest.py
from tests.helpers import ServerProcess, py


@needs_browser
def test_each_gpu_has_a_lane_showing_the_job_on_it(page: Page, start_server, tmp_path: Path) -> None:
    server: ServerProcess = start_server("--gpus", "0,1", "--resource", "license=2", "--workers", "4")
    gate = tmp_path / "go"
    waiter = py(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)")
    try:
        page.goto(server.url + "/")
        lanes = page.locator("#gpu-lanes")
        expect(lanes).to_be_visible()
        expect(lanes.locator(".lane.idle")).to_have_count(2)
        job = server.submit(waiter, requires={"gpus": 1, "license": 1})
        gpu = server.wait_status(job["id"], "IN_PROGRESS")["assigned"]["gpus"][0]
        busy = lanes.locator(f'.lane[data-gpu="{gpu}"]')
        expect(busy).to_have_class("lane busy", timeout=5_000)
        expect(busy.locator("a")).to_have_attribute("href", f"#/jobs/{job['id']}")
        expect(lanes.locator('.lane[data-resource="license"]')).to_contain_text("1 of 2 in use")
        screenshot(page, tmp_path, "dashboard-gpus.png")
        busy.locator("a").click()
        expect(page.locator("#job-view")).to_be_visible()
    finally:
        gate.touch()
    server.wait_status(job["id"], "COMPLETED")
    page.goto(server.url + "/")
    expect(page.locator("#gpu-lanes .lane.idle")).to_have_count(2, timeout=5_000)
    assert server.stop() == 0


@needs_browser
def test_a_server_without_gpus_or_resources_shows_no_lanes(page: Page, start_server) -> None:
    server: ServerProcess = start_server()
    page.goto(server.url + "/")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#gpu-lanes")).to_be_hidden()
    assert server.stop() == 0
