"""The dashboard in a real headless Chromium, against `stocktracker up --source replay` with the recorded day: the
board shows the expected last prices and active buy / sell volumes, the basis matches the API, clicking a symbol
opens its candles, and the page logs no error. A screenshot is saved to tests/artifacts/ (not committed)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cdp import Browser, find_chromium
from helpers import REPLAY_DAY, eventually, expected_day
from stack import exact, get

from shared.local import free_port
from shared.market import EXCHANGE_TZ, Exchange, phase_at

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = find_chromium()


def cell(symbol: str, field: str) -> str:
    return f"document.querySelector('tr[data-symbol=\"{symbol}\"] [data-field=\"{field}\"]')?.dataset.value"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: install Debian's chromium (.ci/run does)")
async def test_dashboard_in_a_real_browser(tmp_path: Path, launch: Any) -> None:
    assert CHROMIUM is not None
    expected = expected_day()
    up = launch(tmp_path, free_port(), "--source", "replay", "--replay-file", str(REPLAY_DAY), "--speed", "0",
            basket=expected["vn30_basket"])
    try:
        await up.read_until("Ready:")
        await eventually(lambda: exact(up.url), timeout=60, interval=0.5)
        async with Browser(CHROMIUM) as browser:
            await browser.goto(f"{up.url}/")
            await browser.wait_for("document.querySelector('#connection')?.dataset.state === 'live'")
            for symbol in ("ACB", "FPT", "TCB"):
                await browser.wait_for(f"{cell(symbol, 'last_price')} !== undefined")
                assert float(await browser.evaluate(cell(symbol, "last_price"))) == expected["prices"][symbol][
                    "last_price"]
                assert float(await browser.evaluate(cell(symbol, "buy_volume"))) == expected["quotes"][symbol][
                    "mua_chu_dong_volume"]
                assert float(await browser.evaluate(cell(symbol, "sell_volume"))) == expected["quotes"][symbol][
                    "ban_chu_dong_volume"]
            rows = await browser.evaluate("document.querySelectorAll('#board tr[data-symbol]').length")
            assert rows == len(expected["vn30_basket"])

            _, snapshot, _ = await get(f"{up.url}/api/market/snapshot")
            basis = await browser.wait_for("document.querySelector('#basis-value')?.dataset.value")
            assert float(basis) == pytest.approx(snapshot["derivatives"]["basis"], abs=1e-6)

            # The page's phase is the one schedule's: the day's last update is 14:45:12, so for the next quarter of an
            # hour HOSE is in its post-close session (put-through to 15:00), not closed.
            phase = await browser.wait_for("document.querySelector('#phase')?.dataset.phase || undefined")
            assert phase == phase_at(Exchange.HOSE, datetime(2026, 11, 24, 14, 46, tzinfo=EXCHANGE_TZ)) == "post_close"

            await browser.evaluate("document.querySelector('tr[data-symbol=\"BID\"]').click()")
            candles = await browser.wait_for(
                "Number(document.querySelector('#detail-candles')?.dataset.candles || 0)")
            assert candles == len(expected["candles"]["BID"])
            assert await browser.evaluate("document.querySelector('#detail')?.dataset.symbol") == "BID"
            await browser.wait_for("document.querySelectorAll('#detail-ticks tbody tr').length > 0")

            await browser.screenshot(ARTIFACTS / "dashboard.png")
            assert browser.problems == []
    finally:
        await up.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: install Debian's chromium (.ci/run does)")
async def test_dashboard_during_a_simulated_session(tmp_path: Path, launch: Any) -> None:
    """The default `up` (the simulator as the feed): every panel fills in, the page stays quiet, and the screenshot
    saved is the kind the README shows."""
    assert CHROMIUM is not None
    up = launch(tmp_path, free_port())
    try:
        await up.read_until("Ready:")
        async with Browser(CHROMIUM) as browser:
            await browser.goto(f"{up.url}/")
            await browser.wait_for("document.querySelector('#connection')?.dataset.state === 'live'")
            _, basket, _ = await get(f"{up.url}/api/market/basket")
            await browser.wait_for(
                f"document.querySelectorAll('#board tr[data-symbol] [data-field=last_price][data-value]').length"
                f" === {len(basket['symbols'])}", timeout=60)
            await browser.wait_for("document.querySelector('#basis-value')?.dataset.value !== undefined", timeout=60)
            await browser.wait_for(
                "document.querySelector('#indices [data-index=VN30] [data-field=value]')?.dataset.value !== undefined")
            await browser.wait_for("document.querySelectorAll('#foreign-flows [data-symbol]').length > 0", timeout=60)
            phase = await browser.evaluate("document.querySelector('#phase')?.dataset.phase")
            assert phase in ("pre_open", "ato", "continuous", "lunch", "atc", "post_close", "closed")
            await browser.screenshot(ARTIFACTS / "dashboard-simulated.png")
            assert browser.problems == []
    finally:
        await up.stop()
