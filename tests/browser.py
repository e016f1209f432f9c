"""Playwright driving Debian's Chromium for the dashboard tests: the browser and page fixtures (registered
in conftest.py), the skip marker when there is no browser, and screenshots (also into docs/ on request)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

UI = ROOT / "api" / "ui"
CHROMIUM = os.environ.get("PROCQ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# PROCQ_DOCS_SCREENSHOTS=1 also writes the README's screenshots into docs/.
DOCS = ROOT / "docs" if os.environ.get("PROCQ_DOCS_SCREENSHOTS") else None

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the HTTP-only dashboard tests still run
    Browser = Page = expect = sync_playwright = None  # type: ignore[assignment,misc]

__all__ = ["DOCS", "UI", "Browser", "Page", "expect", "needs_browser", "screenshot", "browser", "page"]

# Without a browser these tests skip, saying why; CI sets PROCQ_REQUIRE_BROWSER=1 so they fail instead.
needs_browser = pytest.mark.skipif(
    not os.environ.get("PROCQ_REQUIRE_BROWSER")
    and (sync_playwright is None or not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM))),
    reason=f"needs Playwright for Python and Chromium at {CHROMIUM} (apt-get install chromium)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert sync_playwright is not None, "pip install playwright (the Python package; never `playwright install`)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="light")
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    yield tab
    context.close()


def screenshot(page: Page, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000  # a real rendering, not an empty page
    if DOCS is not None:
        DOCS.mkdir(exist_ok=True)
        shutil.copy(path, DOCS / name)
    return path
