"""The dashboard in a real headless Chromium, against `stocktracker up --source replay` with the recorded day: the
board shows the expected last prices and active buy / sell volumes, the basis matches the API, clicking a symbol
opens its candles, and the page logs no error. A screenshot is saved to tests/artifacts/ (not committed).

Accessibility, with real key presses: the board's rows are reached with Tab (one roving tabindex) and the arrows,
Enter / Space open the detail dialog with focus inside it, Escape closes it and focus is back on the row; the token
overlay is a modal dialog that keeps focus; the charts are described in words; a price at the ceiling / floor (and
up / down / reference) has a cue besides its colour; prefers-reduced-motion stops every animation and transition."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cdp import Browser, find_chromium
from helpers import REPLAY_DAY, eventually, expected_day
from stack import exact, get

from launcher.local import free_port
from shared.market import EXCHANGE_TZ, Exchange, phase_at

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = find_chromium()


def cell(symbol: str, field: str) -> str:
    return f"document.querySelector('tr[data-symbol=\"{symbol}\"] [data-field=\"{field}\"]')?.dataset.value"


def td(symbol: str, field: str) -> str:
    return f"document.querySelector('#board tr[data-symbol=\"{symbol}\"] [data-field=\"{field}\"]')"


# The focused element, in a form the assertions can compare.
FOCUSED = """(() => {
  const el = document.activeElement;
  return {tag: el.tagName, id: el.id, symbol: el.dataset.symbol || null, tabIndex: el.tabIndex,
          inDetail: document.getElementById('detail').contains(el),
          inAuth: document.getElementById('auth').contains(el),
          visible: el.matches(':focus-visible'), outline: getComputedStyle(el).outlineStyle,
          outlineWidth: getComputedStyle(el).outlineWidth};
})()"""

# A dialog's semantics: its role, aria-modal and the text of what aria-labelledby names.
DIALOG = """((id) => {
  const el = document.getElementById(id);
  const label = (el.getAttribute('aria-labelledby') || '').split(' ').filter(Boolean)
    .map((ref) => document.getElementById(ref)?.textContent.trim()).join(' ');
  return {role: el.getAttribute('role'), modal: el.getAttribute('aria-modal'), label, hidden: el.hidden};
})"""

# The longest transition or animation anywhere on the page (pseudo-elements included): [seconds, where].
LONGEST_MOTION = """(() => {
  const seconds = (list) => Math.max(0, ...list.split(',').map((v) => {
    const n = parseFloat(v);
    return Number.isFinite(n) ? (v.trim().endsWith('ms') ? n / 1000 : n) : 0;
  }));
  let longest = [0, ''];
  for (const el of document.querySelectorAll('*')) {
    for (const pseudo of [null, '::before', '::after']) {
      const style = getComputedStyle(el, pseudo);
      const t = Math.max(seconds(style.transitionDuration),
                         style.animationName === 'none' ? 0 : seconds(style.animationDuration));
      if (t > longest[0]) longest = [t, `${el.tagName}${el.id ? '#' + el.id : ''}.${el.className}${pseudo || ''}`];
    }
  }
  return longest;
})()"""


def pick(found: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: found[key] for key in keys}


RING = {"visible": True, "outline": "solid", "outlineWidth": "2px"}  # the page's own ring, not the browser's "auto"


def cue(element: str) -> str:
    """The glyph a price cell shows before its number (CSS generated content), its title and its text."""
    return (f"(() => {{ const el = {element}; return {{content: getComputedStyle(el, '::before').content, "
            f"title: el.title, text: el.textContent, value: el.dataset.value, trend: el.dataset.trend}}; }})()")


async def check_board_keyboard(browser: Browser) -> str:
    """Tab reaches the board's rows once, the arrows move between them, Enter and Space open the detail dialog with
    focus inside it, Tab stays inside, Escape and the close button close it with focus back on the row. Returns the
    symbol opened."""
    await browser.evaluate("document.activeElement.blur()")
    for _ in range(20):
        await browser.press("Tab")
        focused = await browser.evaluate(FOCUSED)
        if focused["symbol"]:
            break
    else:
        raise AssertionError("Tab never reached a board row")
    rows = await browser.evaluate("[...document.querySelectorAll('#board tbody tr')].map((tr) => tr.dataset.symbol)")
    assert pick(focused, "tag", "symbol", "tabIndex") == {"tag": "TR", "symbol": rows[0], "tabIndex": 0}
    assert pick(focused, *RING) == RING
    # One roving tab stop: the arrows move it, every other row is out of the Tab order.
    await browser.press("ArrowDown")
    await browser.press("ArrowDown")
    focused = await browser.evaluate(FOCUSED)
    assert pick(focused, "symbol", "tabIndex") == {"symbol": rows[2], "tabIndex": 0}
    await browser.press("ArrowUp")
    symbol = rows[1]
    assert (await browser.evaluate(FOCUSED))["symbol"] == symbol
    tab_stops = await browser.evaluate("[...document.querySelectorAll('#board tbody tr')].filter((tr) => "
                                       "tr.tabIndex === 0).map((tr) => tr.dataset.symbol)")
    assert tab_stops == [symbol]

    await browser.press("Enter")
    await browser.wait_for(f"document.getElementById('detail').dataset.symbol === {symbol!r}")
    dialog = await browser.evaluate(f"{DIALOG}('detail')")
    assert dialog == {"role": "dialog", "modal": "true", "label": symbol, "hidden": False}
    assert (await browser.evaluate(FOCUSED))["inDetail"]
    assert await browser.evaluate(f"document.querySelector('#board tr[data-symbol=\"{symbol}\"]')"
                                  ".getAttribute('aria-current')") == "true"
    for shift in (False, False, False, True, True, True):  # focus stays in the dialog, both ways round
        await browser.press("Tab", shift=shift)
        focused = await browser.evaluate(FOCUSED)
        assert pick(focused, "inDetail", *RING) == {"inDetail": True, **RING}, focused

    await browser.press("Escape")
    await browser.wait_for("document.getElementById('detail').hidden")
    assert pick(await browser.evaluate(FOCUSED), "tag", "symbol") == {"tag": "TR", "symbol": symbol}

    await browser.press(" ")  # Space opens it too; Enter on the close button closes it, focus back again
    await browser.wait_for(f"document.getElementById('detail').dataset.symbol === {symbol!r}")
    assert (await browser.evaluate(FOCUSED))["id"] == "detail-close"
    await browser.press("Enter")
    await browser.wait_for("document.getElementById('detail').hidden")
    assert (await browser.evaluate(FOCUSED))["symbol"] == symbol
    return symbol


async def check_charts(browser: Browser, expected: dict[str, Any]) -> None:
    """Every chart is role img with a description of what it draws, kept up to date."""
    vn30 = expected["indices"]["VN30"]
    spark = "document.querySelector('#indices [data-index=VN30] canvas')"
    label = await browser.wait_for(
        f"{spark}?.getAttribute('aria-label')?.startsWith('VN30 {vn30['value']:,.2f}') && "
        f"{spark}.getAttribute('aria-label')")
    assert await browser.evaluate(f"{spark}.getAttribute('role')") == "img"
    assert f"giảm {-vn30['change']:,.2f} ({vn30['ratio_change']:.2f}%)" in label, label
    assert "; trong phiên thấp nhất " in label, label

    basis = expected["derivatives"]
    current = f"hiện tại +{expected['basis_points'][-1]:.2f} (premium)"
    # The chart follows the gateway's basis reader, which may trail the recorder (what `exact` waited for) by a
    # moment: wait for the day's last point to be drawn.
    label = await browser.wait_for(
        f"document.getElementById('basis-chart').getAttribute('aria-label')?.includes('{basis['symbol']}') && "
        f"document.getElementById('basis-chart').getAttribute('aria-label').includes({current!r}) && "
        "document.getElementById('basis-chart').getAttribute('aria-label')")
    assert await browser.evaluate("document.getElementById('basis-chart').getAttribute('role')") == "img"
    assert current in label, label


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
            # One WebSocket for the whole tab, carrying every channel the page follows.
            assert [url.split("//", 1)[1].split("/", 1)[1] for url in browser.websockets] == [
                "ws?channels=market,index,foreign,derivatives"]

            _, snapshot, _ = await get(f"{up.url}/api/market/snapshot")
            basis = await browser.wait_for("document.querySelector('#basis-value')?.dataset.value")
            assert float(basis) == pytest.approx(snapshot["derivatives"]["basis"], abs=1e-6)

            # The page's phase is the one schedule's: the day's last update is 14:45:12, so for the next quarter of an
            # hour HOSE is in its post-close session (put-through to 15:00), not closed.
            phase = await browser.wait_for("document.querySelector('#phase')?.dataset.phase || undefined")
            assert phase == phase_at(Exchange.HOSE, datetime(2026, 11, 24, 14, 46, tzinfo=EXCHANGE_TZ)) == "post_close"

            await check_board_keyboard(browser)
            await check_charts(browser, expected)

            await browser.evaluate("document.querySelector('tr[data-symbol=\"BID\"]').click()")
            candles = await browser.wait_for(
                "Number(document.querySelector('#detail-candles')?.dataset.candles || 0)")
            assert candles == len(expected["candles"]["BID"])
            assert await browser.evaluate("document.querySelector('#detail')?.dataset.symbol") == "BID"
            await browser.wait_for("document.querySelectorAll('#detail-ticks tbody tr').length > 0")
            bid = expected["candles"]["BID"]
            label = await browser.evaluate("document.getElementById('detail-candles').getAttribute('aria-label')")
            assert await browser.evaluate("document.getElementById('detail-candles').getAttribute('role')") == "img"
            assert label.startswith(f"BID: {len(bid)} nến 1 phút từ 09:15 đến 14:45, "
                                    f"giá đóng cửa cuối {bid[-1]['close']:,.0f}, "
                                    f"cao nhất {max(c['high'] for c in bid):,.0f}, "
                                    f"thấp nhất {min(c['low'] for c in bid):,.0f}"), label

            await browser.screenshot(ARTIFACTS / "dashboard.png")
            await browser.evaluate("window.stockTracker.closeDetail()")
            await check_cues(browser, expected)
            assert browser.problems == []
    finally:
        await up.stop()


async def check_cues(browser: Browser, expected: dict[str, Any]) -> None:
    """A last price says its trend without colour: ▲ / ▼ / ■ for up / down / reference, a boxed T / S at the ceiling /
    floor (and the word in its title); the number's text and data-value stay as they were. No symbol of the recorded
    day ends at its ceiling or floor, so the page's own store is handed two prices that do, as a delta would."""
    prices = expected["prices"]
    for symbol, glyph, title in (("BID", "▲", "Tăng"), ("ACB", "▼", "Giảm"), ("SHB", "■", "Tham chiếu")):
        shown = await browser.evaluate(cue(td(symbol, "last_price")))
        assert shown["content"].startswith(f'"{glyph}"'), shown
        assert shown["title"] == title
        assert float(shown["value"]) == prices[symbol]["last_price"]
        assert shown["text"] == f"{prices[symbol]['last_price']:,.0f}"
    await browser.evaluate("""(async () => {
      const { applyMarket, store } = await import('/static/store.js');
      const at = (symbol, field) => {
        const p = store.prices.get(symbol);
        return { ...p, last_price: p[field], change: p[field] - p.ref_price };
      };
      applyMarket({ type: 'delta', data: { prices: { FPT: at('FPT', 'ceiling'), MWG: at('MWG', 'floor') } } });
    })()""")
    await browser.wait_for(f"{td('FPT', 'last_price')}.dataset.trend === 'ceiling' && "
                           f"{td('MWG', 'last_price')}.dataset.trend === 'floor'")
    for symbol, field, glyph, title in (("FPT", "ceiling", "T", "Giá trần"), ("MWG", "floor", "S", "Giá sàn")):
        shown = await browser.evaluate(cue(td(symbol, "last_price")))
        assert shown["content"].startswith(f'"{glyph}"'), shown
        assert shown["title"] == title
        assert float(shown["value"]) == prices[symbol][field]
        assert shown["text"] == f"{prices[symbol][field]:,.0f}"
        # The glyph is announced as a word, not as a letter.
        assert title.lower() in shown["content"], shown
    await browser.screenshot(ARTIFACTS / "dashboard-cues.png")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: install Debian's chromium (.ci/run does)")
async def test_token_overlay_is_a_modal_dialog(tmp_path: Path, launch: Any) -> None:
    """With GATEWAY_TOKEN set the token form opens as a modal dialog with focus in its input, the page behind inert
    and Tab kept inside; Escape puts it away (the header's button brings it back, focus in the input again), and the
    right token makes the page live."""
    assert CHROMIUM is not None
    token = "a11y-test-token"
    up = launch(tmp_path, free_port(), "--source", "replay", "--replay-file", str(REPLAY_DAY), "--speed", "0",
                env={"GATEWAY_TOKEN": token})
    try:
        await up.read_until("Ready:")
        async with Browser(CHROMIUM) as browser:
            await browser.goto(f"{up.url}/")
            await browser.wait_for("!document.getElementById('auth').hidden")
            dialog = await browser.evaluate(f"{DIALOG}('auth')")
            assert dialog == {"role": "dialog", "modal": "true", "label": "Cần token truy cập", "hidden": False}
            focused = await browser.evaluate(FOCUSED)
            assert pick(focused, "id", "visible") == {"id": "auth-token", "visible": True}
            assert await browser.evaluate("[...document.body.children].filter((el) => el.id !== 'auth')"
                                          ".every((el) => el.inert)")
            for shift in (False, False, False, False, True, True, True):
                await browser.press("Tab", shift=shift)
                focused = await browser.evaluate(FOCUSED)
                assert pick(focused, "inAuth", *RING) == {"inAuth": True, **RING}, focused

            await browser.press("Escape")
            await browser.wait_for("document.getElementById('auth').hidden")
            assert (await browser.evaluate(FOCUSED))["id"] == "auth-open"
            assert not await browser.evaluate("[...document.body.children].some((el) => el.inert)")
            await browser.press("Enter")
            await browser.wait_for("!document.getElementById('auth').hidden")
            assert (await browser.evaluate(FOCUSED))["id"] == "auth-token"

            await browser.type_text(token)
            await browser.press("Enter")
            await browser.wait_for("document.querySelector('#connection')?.dataset.state === 'live'")
            assert await browser.evaluate("document.getElementById('auth').hidden")
            assert await browser.evaluate("document.getElementById('auth-open').hidden")
            assert await browser.evaluate("sessionStorage.getItem('stocktracker.token')") == token
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

            # Sorted by % from the keyboard, the rows keep moving while the session runs: the focused row keeps focus.
            await browser.evaluate("document.querySelector('#board th[data-sort=change_pct]').focus()")
            await browser.press("Enter")
            assert await browser.evaluate("document.getElementById('board').dataset.sortKey") == "change_pct"
            for _ in range(4):  # past the other sort headers to the board's one tab stop
                await browser.press("Tab")
                if (await browser.evaluate(FOCUSED))["symbol"]:
                    break
            symbol = (await browser.evaluate(FOCUSED))["symbol"]
            assert symbol
            order = "[...document.querySelectorAll('#board tbody tr')].map((tr) => tr.dataset.symbol).join()"
            before = await browser.evaluate(order)
            await browser.wait_for(f"{order} !== {before!r}", timeout=60)
            assert (await browser.evaluate(FOCUSED))["symbol"] == symbol

            # prefers-reduced-motion: the page has motion by default (row transitions, the drawer sliding in, a
            # changed price flashing), none of it once the user asks for less.
            flashing = "document.querySelector('#board td[data-flash]')"
            flash_colour = f"{flashing} && getComputedStyle({flashing}).backgroundColor"
            assert (await browser.evaluate(LONGEST_MOTION))[0] > 0
            assert await browser.wait_for(flash_colour) != "rgba(0, 0, 0, 0)"
            await browser.emulate_media(prefers_reduced_motion="reduce")
            assert await browser.evaluate("matchMedia('(prefers-reduced-motion: reduce)').matches")
            await browser.evaluate("document.querySelector('#board tr[data-symbol]').click()")
            await browser.wait_for("!document.getElementById('detail').hidden")
            assert await browser.evaluate(LONGEST_MOTION) == [0, ""]
            assert await browser.wait_for(flash_colour) == "rgba(0, 0, 0, 0)"
            assert browser.problems == []
    finally:
        await up.stop()
