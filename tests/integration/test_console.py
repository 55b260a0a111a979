"""The console in a real headless browser (Debian's chromium driven by Playwright): load
the page, start a run, watch the events/s chart move, pause it. Leaves a screenshot in
artifacts/console.png."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.test_daemon_process import TOKEN, Serve

pytestmark = [pytest.mark.integration, pytest.mark.timed]
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_console_starts_watches_and_pauses_a_run(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    d = Serve(tmp_path)
    (d.configs / "shop.yaml").write_text(
        "run: {name: shop, seed: 1}\n"
        "packs: {retail: {streams: {pos_transaction: {rate: {profile: constant, base: 1500}}}}}\n"
        f"sinks: {{out: {{type: file, path: '{tmp_path / 'out'}'}}}}\n"
        "chaos: [{step: drop, rate: 0.02}]\n"
    )
    d.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.goto(f"http://127.0.0.1:{d.port}/?token={TOKEN}")
            expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
            expect(page.locator("#config-select")).to_have_value("shop")
            page.click("#start")
            row = page.locator("#runs tbody tr").first
            expect(row.locator(".state")).to_have_text("RUNNING", timeout=15_000)
            # the chart moves: points with a positive rate accumulate, the EPS cell shows ~1500
            deadline = time.monotonic() + 20
            while int(page.locator("#chart").get_attribute("data-points") or 0) < 6:
                assert time.monotonic() < deadline, "the chart never moved"
                page.wait_for_timeout(250)
            eps = int(row.locator(".eps").inner_text().replace(",", ""))
            assert 1000 < eps < 2000
            expect(page.locator("#chaos tbody tr").first).to_contain_text("drop")
            # every sink's own row: its lag, buffer policy and status
            sink_row = page.locator("#sinks tbody tr[data-sink=out]").first
            expect(sink_row).to_contain_text("block")
            expect(sink_row.locator(".status")).to_have_text("ok")
            row.locator("button.pause").click()
            expect(row.locator(".state")).to_have_text("PAUSED", timeout=10_000)
            run_id = row.get_attribute("data-run")
            # paused for real: the daemon says so and releases nothing more
            view = d.get(f"/v1/runs/{run_id}")
            assert view["state"] == "PAUSED"
            a = view["streams"]["retail.pos_transaction"]["released"]
            page.wait_for_timeout(1500)
            assert d.get(f"/v1/runs/{run_id}")["streams"]["retail.pos_transaction"]["released"] == a
            (ROOT / "artifacts").mkdir(exist_ok=True)
            shot = ROOT / "artifacts" / "console.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            browser.close()
    finally:
        assert d.stop() == 0
