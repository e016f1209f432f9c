"""The dashboard's list of cluster nodes in real Chromium (GET /nodes), with real nodes on one real
PostgreSQL schema; hidden on a single machine."""

from __future__ import annotations

import re
from pathlib import Path

from tests.browser import Page, expect, needs_browser, screenshot  # browser and page fixtures: conftest.py
from tests.helpers import ServerProcess, py


@needs_browser
def test_the_overview_lists_every_node_with_its_slots_running_jobs_state_and_heartbeat(
    page: Page, start_server, tmp_path: Path, pg_url: str
) -> None:
    env = {"PROCQ_DATABASE_URL": pg_url}
    first: ServerProcess = start_server("--node-name", "alpha", "--lease", "4", directory=tmp_path / "a", env=env)
    second: ServerProcess = start_server(
        "--node-name", "beta", "--workers", "3", "--lease", "4", directory=tmp_path / "b", env=env
    )
    gate = tmp_path / "go"
    job = first.submit(py(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)"))
    try:
        running = first.wait_status(job["id"], "IN_PROGRESS", timeout=20)
        page.goto(second.url + "/")
        section = page.locator("#cluster-nodes")
        expect(section).to_be_visible()
        rows = section.locator("tbody tr")
        expect(rows).to_have_count(2)
        alpha, beta = section.locator('tr[data-node="alpha"] td'), section.locator('tr[data-node="beta"] td')
        expect(alpha).to_have_text(
            ["alpha", first.url, "2", "1" if running["node"] == "alpha" else "0", "up", re.compile(r"\d+ s ago")]
        )
        expect(beta.nth(2)).to_have_text("3")
        expect(section.locator(f'tr[data-node="{running["node"]}"] td').nth(3)).to_have_text("1")
        expect(beta.nth(4)).to_have_text("up")
        screenshot(page, tmp_path, "dashboard-nodes.png")
    finally:
        gate.touch()
    first.wait_status(job["id"], "COMPLETED", timeout=20)
    assert first.stop() == 0  # a node that stops cleanly leaves: the list says so
    expect(section.locator('tr[data-node="alpha"] .node-state')).to_have_text("left", timeout=5_000)
    assert second.stop() == 0


@needs_browser
def test_a_single_machine_shows_no_nodes(page: Page, start_server) -> None:
    server: ServerProcess = start_server()
    page.goto(server.url + "/")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#cluster-nodes")).to_be_hidden()
    assert server.stop() == 0
