"""The dashboard at ``/``, in headless Chromium: it lists a live stream and its bitrate, live.

Debian's chromium is driven by Playwright (``executable_path``; Playwright never
downloads a browser here). Screenshots of the edge's and the app's dashboards are
saved and their paths printed: RELAY_TEST_ARTIFACTS names the folder (default: the
test's tmp dir).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import aiohttp
import pytest

from tests.support import publishers
from tests.support.relay import Relay, until

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

# Waits on the page's own 1 s polls: generous, since a loaded CI box slows headless chromium
# (10 s for five polls failed once there); a passing run never waits this long.
WAIT_MS = 30_000


def kbits(text: str) -> float:
    m = re.fullmatch(r"([\d.]+) (k|M)bit/s", text.strip())
    assert m, f"bitrate cell says {text!r}"
    return float(m.group(1)) * (1000 if m.group(2) == "M" else 1)


async def test_dashboard_is_served_on_both_sides(tmp_path: Path) -> None:
    async with Relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        assert relay.edge is not None
        for port in (relay.edge.http_port, relay.app_port):
            async with http.get(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/html")
                page = await r.text()
            assert '"api/rtmp/status"' in page.replace("'", '"')  # relative: works behind a path prefix
            assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # no CDN, no outside fetch


async def test_dashboard_shows_a_live_stream_in_chromium(tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (scripts/setup --test installs it)")
    playwright_api = pytest.importorskip("playwright.async_api")
    artifacts = Path(os.environ.get("RELAY_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    async with Relay(tmp_path / "out") as relay, playwright_api.async_playwright() as pw:
        assert relay.edge is not None
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            edge_page = await browser.new_page(viewport={"width": 1400, "height": 300})
            app_page = await browser.new_page(viewport={"width": 1400, "height": 300})
            await edge_page.goto(f"http://127.0.0.1:{relay.edge.http_port}/")
            await app_page.goto(f"http://127.0.0.1:{relay.app_port}/")
            await edge_page.wait_for_selector("#empty", state="visible")  # polling works, nothing live yet
            async with await publishers.ffmpeg_tone(relay.url("dash-demo"), seconds=12, frequency=440) as pub:
                row = 'tr[data-stream="dash-demo"]'
                await edge_page.wait_for_selector(row, timeout=WAIT_MS)
                await app_page.wait_for_selector(row, timeout=WAIT_MS)
                # A few polls: the bitrate settles and the chart has a line.
                await until(lambda: relay.streams.get("dash-demo") is not None, 5)
                points = f"document.querySelector('{row} svg polyline')?.getAttribute('points')"
                await edge_page.wait_for_function(f"({points} || '').split(' ').length >= 5", timeout=WAIT_MS)
                await app_page.wait_for_function(
                    f"document.querySelector('{row} td.level')?.textContent.includes('dBFS')", timeout=WAIT_MS
                )
                edge_rate = kbits(await edge_page.inner_text(f"{row} td.bitrate"))
                app_rate = kbits(await app_page.inner_text(f"{row} td.bitrate"))
                cells = {
                    name: await edge_page.inner_text(f"{row} td.{name}")
                    for name in ("codecs", "link", "level", "buffered", "state")
                }
                app_level = await app_page.inner_text(f"{row} td.level")
                app_link = await app_page.inner_text(f"{row} td.link")
                edge_shot = artifacts / "dashboard-edge.png"
                app_shot = artifacts / "dashboard-app.png"
                await edge_page.screenshot(path=str(edge_shot), full_page=True)
                await app_page.screenshot(path=str(app_shot), full_page=True)
                await pub.wait_ok(30)
            # The stream ends: the app drops the row; the edge shows it ended (or drops it once acked).
            await app_page.wait_for_selector(row, state="detached", timeout=WAIT_MS)
            await edge_page.wait_for_function(
                f"!document.querySelector('{row}') || "
                f"document.querySelector('{row} td.state').textContent === 'ended'",
                timeout=WAIT_MS,
            )
        finally:
            await browser.close()
    print(f"\ndashboard screenshots: {edge_shot} {app_shot}")
    print(f"edge shows {edge_rate} kbit/s, app {app_rate} kbit/s, app level {app_level!r}")
    assert 80 < edge_rate < 200  # 128 kbit/s AAC, payload bytes
    assert 80 < app_rate < 250  # the app counts tag headers too
    assert cells["codecs"] == "audio aac"
    assert cells["link"].startswith("up")
    assert cells["level"] == "—"  # the edge never decodes audio
    assert cells["state"] == "live"
    assert re.search(r"-\d+\.\d dBFS", app_level)
    assert app_link == "up"
    assert edge_shot.stat().st_size > 10_000 and app_shot.stat().st_size > 10_000


def test_dashboard_ships_as_package_data() -> None:
    """One file, no build step: listed in package-data so wheels and the Docker image carry it."""
    import tomllib

    from relay_edge.web import dashboard_html

    root = Path(__file__).resolve().parent.parent
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "dashboard.html" in package_data["relay_edge"]
    html = dashboard_html().decode()
    assert html.startswith("<!doctype html>") and "setTimeout(poll, POLL_MS)" in html
    assert "<script src" not in html and "<link " not in html  # everything inline
