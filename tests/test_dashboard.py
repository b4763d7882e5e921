"""The dashboard in a real headless Chromium, against `stocktracker up --source replay` with the recorded day: the
board shows the expected last prices and active buy / sell volumes, its book, match, day and foreign columns are the
REST board's, the basis matches the API, clicking a symbol opens its candles, and the page logs no error. The tabs
change the rows and the socket's board subscription (VN30 -> futures), the watchlist survives a reload, the auction's
projected price is marked, and a trade fed into the running system reaches the open detail over its `trades` /
`candles` subscriptions with no history request. Screenshots are saved to tests/artifacts/ (not committed).

Accessibility, with real key presses: the board's rows are reached with Tab (one roving tabindex) and the arrows,
Enter / Space open the detail dialog with focus inside it, Escape closes it and focus is back on the row; the token
overlay is a modal dialog that keeps focus; the charts are described in words; a price at the ceiling / floor (and
up / down / reference) has a cue besides its colour; prefers-reduced-motion stops every animation and transition."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cdp import Browser, find_chromium
from helpers import DAY_ALERTS, REPLAY_DAY, eventually, expected_day
from stack import REPO, exact, get

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


# --- the board's columns, tabs, watchlist and the live detail -----------------------------------------------------

BOARD_ROWS = "[...document.querySelectorAll('#board tbody tr')].map((tr) => tr.dataset.symbol).join()"
SELECTED_TAB = "document.querySelector('#board-tabs [aria-selected=true]')?.dataset.tab"

# A board row as the page shows it: each cell's raw number (data-value, null when empty), colour and text.
ROW_CELLS = """((symbol) => {
  const tr = document.querySelector(`#board tr[data-symbol="${symbol}"]`);
  if (!tr) return null;
  const cells = {};
  for (const td of tr.children) {
    cells[td.dataset.field] = {value: td.dataset.value === undefined ? null : Number(td.dataset.value),
                               trend: td.dataset.trend || null, text: td.textContent,
                               color: getComputedStyle(td).color};
  }
  return cells;
})"""

# The board's colours (style.css :root), as getComputedStyle gives them.
COLOURS = {"ceiling": "rgb(199, 125, 255)", "floor": "rgb(56, 210, 230)", "ref": "rgb(245, 197, 66)",
           "up": "rgb(31, 209, 122)", "down": "rgb(255, 77, 94)"}


def expected_cells(row: dict[str, Any]) -> dict[str, float | None]:
    """What each of the board's cells must hold (data-value) for a REST board row (GET /api/market/board)."""
    assert row["projected_price"] is None  # the match column shows the last match then
    cells = {field: row[field] for field in (
        "ref_price", "ceiling", "floor", "last_price", "last_volume", "change", "total_volume", "open", "high", "low",
        "avg_price", "foreign_buy_volume", "foreign_sell_volume", "foreign_room")}
    cells["change_pct"] = row["ratio_change"]
    for side, levels in (("bid", row["bids"]), ("ask", row["asks"])):
        for level in (1, 2, 3):
            price, volume = levels[level - 1] if len(levels) >= level else (None, None)
            cells[f"{side}_price_{level}"], cells[f"{side}_volume_{level}"] = price, volume
    return cells


def price_trend(price: float | None, row: dict[str, Any]) -> str | None:
    """The board colour of a price (format.js priceTrend): ceiling, floor, else against the reference."""
    if price is None:
        return None
    if price == row["ceiling"]:
        return "ceiling"
    if price == row["floor"]:
        return "floor"
    return "up" if price > row["ref_price"] else "down" if price < row["ref_price"] else "ref"


def same(shown: float | None, wanted: float | None) -> bool:
    return shown == wanted or (shown is not None and wanted is not None and abs(shown - wanted) < 1e-9)


async def check_board_columns(browser: Browser, url: str, query: str, symbols: list[str]) -> dict[str, Any]:
    """The board shows exactly the rows of GET /api/market/board?`query`, and for `symbols` every book, match, day and
    foreign column equals the REST row's, each price in its board colour (purple ceiling, cyan floor, yellow
    reference, green up, red down) and each volume in its price's. Returns the REST rows by symbol."""
    status, rows, _ = await get(f"{url}/api/market/board?{query}")
    assert status == 200
    by_symbol = {row["symbol"]: row for row in rows}
    await browser.wait_for(f"{BOARD_ROWS} === {','.join(sorted(by_symbol))!r}")
    for symbol in symbols:
        row = by_symbol[symbol]
        wanted = expected_cells(row)
        for _ in range(50):  # a delta may still be on its way (one throttle tick)
            shown = await browser.evaluate(f"{ROW_CELLS}({symbol!r})")
            wrong = {f: (shown[f]["value"], v) for f, v in wanted.items() if not same(shown[f]["value"], v)}
            if not wrong:
                break
            await asyncio.sleep(0.1)
        assert not wrong, (symbol, wrong)
        for field in ("ref_price", "ceiling", "floor", "last_price", "open", "high", "low",
                      *(f"{side}_price_{level}" for side in ("bid", "ask") for level in (1, 2, 3))):
            trend = price_trend(wanted[field], row)
            if field in ("ref_price", "ceiling", "floor"):
                trend = {"ref_price": "ref", "ceiling": "ceiling", "floor": "floor"}[field]
            assert shown[field]["trend"] == trend, (symbol, field, shown[field])
            if trend:
                assert shown[field]["color"] == COLOURS[trend], (symbol, field, shown[field])
        for side in ("bid", "ask"):
            for level in (1, 2, 3):
                volume = shown[f"{side}_volume_{level}"]
                assert volume["trend"] == shown[f"{side}_price_{level}"]["trend"], (symbol, side, level, volume)
        assert shown["last_volume"]["trend"] == shown["last_price"]["trend"]
        assert shown["change"]["trend"] == shown["change_pct"]["trend"] == shown["last_price"]["trend"]
        # The numbers as a Vietnamese board prints them: VND whole with separators, futures points to 0.1.
        futures = symbol.startswith("VN30F")
        for field in ("last_price", "bid_price_1", "ask_price_1"):
            if wanted[field] is not None:
                text = f"{wanted[field]:,.1f}" if futures else f"{wanted[field]:,.0f}"
                assert shown[field]["text"] == text, (symbol, field, shown[field])
        assert shown["total_volume"]["text"] == f"{row['total_volume']:,}"
    return by_symbol


def sent_since(browser: Browser, start: int) -> list[Any]:
    """The WebSocket messages the page sent since `start` (an index into browser.sent), decoded."""
    return [json.loads(payload) for payload in browser.sent[start:]]


async def check_tabs(browser: Browser, url: str) -> None:
    """The tabs are one Tab stop whose arrows switch the board: from VN30, ArrowLeft wraps to the (empty) watchlist,
    which subscribes to nothing, then to futures; the socket leaves group=VN30 and follows exchange=DER, and the rows
    are the futures contracts, their columns the REST board's."""
    assert await browser.evaluate(SELECTED_TAB) == "vn30"
    start = len(browser.sent)
    await browser.evaluate("document.getElementById('tab-vn30').focus()")
    await browser.press("ArrowLeft")
    assert await browser.evaluate(SELECTED_TAB) == "watchlist"
    await browser.wait_for("document.getElementById('board-empty').textContent.startsWith('Danh mục trống')")
    assert await browser.evaluate("document.querySelectorAll('#board tbody tr').length") == 0
    await browser.press("ArrowLeft")
    assert await browser.evaluate(SELECTED_TAB) == "futures"
    focused = await browser.evaluate("document.activeElement.id")
    assert focused == "tab-futures"
    tab_stops = await browser.evaluate("[...document.querySelectorAll('#board-tabs [role=tab]')]"
                                       ".filter((tab) => tab.tabIndex === 0).map((tab) => tab.id)")
    assert tab_stops == ["tab-futures"]
    await check_board_columns(browser, url, "exchange=DER", ["VN30F2612", "VN30F2703"])
    assert (await browser.evaluate("document.getElementById('board-title').textContent")).startswith("Phái sinh")
    assert sent_since(browser, start) == [{"op": "unsubscribe", "channel": "board", "group": "VN30"},
                                          {"op": "subscribe", "channel": "board", "exchange": "DER"}]


async def check_projected(browser: Browser) -> None:
    """During an auction the match column shows the projected price, marked: slanted, the auction named after it (read
    as "dự kiến"), said in its title, the change against the reference, no match volume. The recorded day ends after
    its ATC, so the page's store is handed the row an ATC book would give, as a board delta would."""
    await browser.evaluate("""(async () => {
      const { applyBoard, store } = await import('/static/store.js');
      const row = store.board.get('VN30F2612');
      applyBoard({ type: 'delta', channel: 'board', topic: store.boardTopic, seq: store.boardSeq + 0.5,
                   data: { VN30F2612: { ...row, session: 'ATC', projected_price: 1901.5 } } });
    })()""")
    await browser.wait_for(f"{td('VN30F2612', 'last_price')}.dataset.projected === 'ATC'")
    shown = await browser.evaluate(f"{ROW_CELLS}('VN30F2612')")
    assert pick(shown["last_price"], "value", "text", "trend") == {"value": 1901.5, "text": "1,901.5", "trend": "down"}
    marked = await browser.evaluate(f"(() => {{ const el = {td('VN30F2612', 'last_price')}; return {{"
                                    "after: getComputedStyle(el, '::after').content, title: el.title, "
                                    "style: getComputedStyle(el).fontStyle}; })()")
    assert "ATC" in marked["after"], marked
    assert "dự kiến" in marked["after"], marked
    assert marked["title"] == "Giảm · giá khớp dự kiến ATC", marked
    assert marked["style"] == "italic", marked
    assert shown["change"]["value"] == pytest.approx(1901.5 - 1906.9)
    assert shown["change_pct"]["value"] == pytest.approx(-0.28)
    assert shown["last_volume"]["value"] is None


async def check_watchlist(browser: Browser, url: str) -> None:
    """The watchlist tab: symbols typed in (any case, comma-separated) become rows through a symbols subscription, a
    row's Delete removes it, the list is kept in localStorage and shown again after a reload."""
    await browser.press("End")  # from the futures tab: the last tab
    assert await browser.evaluate(SELECTED_TAB) == "watchlist"
    assert await browser.evaluate("document.getElementById('watchlist').hidden") is False
    start = len(browser.sent)
    await browser.evaluate("document.getElementById('watchlist-input').focus()")
    await browser.type_text("fpt, vn30f2612")
    await browser.press("Enter")
    await check_board_columns(browser, url, "symbols=FPT,VN30F2612", ["FPT", "VN30F2612"])
    assert await browser.evaluate("[...document.querySelectorAll('#watchlist-chips li')].map((li) => "
                                  "li.dataset.symbol)") == ["FPT", "VN30F2612"]
    assert json.loads(await browser.evaluate("localStorage.getItem('stocktracker.watchlist')")) == ["FPT", "VN30F2612"]
    assert sent_since(browser, start) == [{"op": "subscribe", "channel": "board", "symbols": ["FPT", "VN30F2612"]}]

    # One more, then removed again from the keyboard: Delete on its row, focus on the next row.
    start = len(browser.sent)
    await browser.type_text("ACB")
    await browser.press("Enter")
    await browser.wait_for(f"{BOARD_ROWS} === 'ACB,FPT,VN30F2612' && "
                           f"{cell('ACB', 'last_price')} !== undefined")
    await browser.evaluate("document.querySelector('#board tr[data-symbol=ACB]').focus()")
    await browser.press("Delete")
    await browser.wait_for(f"{BOARD_ROWS} === 'FPT,VN30F2612'")
    assert (await browser.evaluate(FOCUSED))["symbol"] == "FPT"
    assert json.loads(await browser.evaluate("localStorage.getItem('stocktracker.watchlist')")) == ["FPT", "VN30F2612"]
    assert sent_since(browser, start) == [
        {"op": "unsubscribe", "channel": "board", "symbols": ["FPT", "VN30F2612"]},
        {"op": "subscribe", "channel": "board", "symbols": ["FPT", "VN30F2612", "ACB"]},
        {"op": "unsubscribe", "channel": "board", "symbols": ["FPT", "VN30F2612", "ACB"]},
        {"op": "subscribe", "channel": "board", "symbols": ["FPT", "VN30F2612"]}]

    # A reload: the watchlist tab and its rows are back, subscribed to again on the new socket.
    start = len(browser.sent)
    await browser.reload()
    await browser.wait_for("document.querySelector('#connection')?.dataset.state === 'live'")
    assert await browser.evaluate(SELECTED_TAB) == "watchlist"
    await check_board_columns(browser, url, "symbols=FPT,VN30F2612", ["FPT", "VN30F2612"])
    assert {"op": "subscribe", "channel": "board", "symbols": ["FPT", "VN30F2612"]} in sent_since(browser, start)


def history_requests(browser: Browser, start: int) -> list[str]:
    """The paths of the /api/history requests the page made since `start` (an index into browser.requests)."""
    return [urlsplit(url).path for url in browser.requests[start:] if "/api/history/" in url]


def last_trade(symbol: str) -> dict[str, Any]:
    """The recorded day's last X-TRADE frame of `symbol`, its Content decoded."""
    for line in reversed(REPLAY_DAY.read_text().splitlines()):
        try:
            frame = json.loads(line)
            content = frame["Content"]
            content = json.loads(content) if isinstance(content, str) else content
        except (ValueError, TypeError, KeyError):
            continue  # the file's deliberately malformed lines
        if frame.get("DataType") == "X-TRADE" and isinstance(content, dict) and content.get("Symbol") == symbol:
            return content
    raise AssertionError(f"no X-TRADE of {symbol} in {REPLAY_DAY}")


async def feed_trade(up: Any, state_dir: Path, symbol: str, price: float, volume: int) -> int:
    """One more trade of `symbol` through the whole running system (`stocktracker replay` of one X-TRADE frame into
    its NATS: ingest, classifier, board tracker, gateway), after the day's last one; its cumulative volume."""
    _, rows, _ = await get(f"{up.url}/api/market/board?symbols={symbol}")
    row = rows[0]
    content = last_trade(symbol)
    total = row["total_volume"] + volume
    content.update(Time="14:45:40", LastPrice=price, LastVol=volume, TotalVol=total,
                   TotalVal=row["total_value"] + price * volume, Change=price - row["ref_price"],
                   RatioChange=round((price - row["ref_price"]) / row["ref_price"] * 100, 2),
                   EstMatchedPrice=price, Side=None)
    frame = state_dir / "one-trade.jsonl"
    frame.write_text(json.dumps({"DataType": "X-TRADE", "Content": json.dumps(content)}) + "\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "launcher.cli", "replay", "--state-dir", str(state_dir), str(frame), env=up.env,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    assert "1 published" in output.decode(), output.decode()
    return total


async def check_live_detail(browser: Browser, up: Any, state_dir: Path, expected: dict[str, Any]) -> None:
    """Opening FPT's detail subscribes to its trades and candles; its ticks come from the trades snapshot, not the
    history API (only the day's candles are read, once). A trade fed into the running system then arrives in the
    tick list, the forming candle and the board row, with no request to the history API; closing unsubscribes."""
    requests, sent = len(browser.requests), len(browser.sent)
    await browser.evaluate("document.querySelector('#board tr[data-symbol=FPT]').click()")
    await browser.wait_for("document.getElementById('detail').dataset.symbol === 'FPT'")
    candles = len(expected["candles"]["FPT"])
    await browser.wait_for(f"Number(document.getElementById('detail-candles').dataset.candles) === {candles}")
    await browser.wait_for(f"document.querySelectorAll('#detail-ticks tbody tr').length === {expected['ticks']['FPT']}")
    assert sent_since(browser, sent) == [{"op": "subscribe", "channel": "trades", "symbol": "FPT"},
                                         {"op": "subscribe", "channel": "candles", "symbol": "FPT"}]
    assert history_requests(browser, requests) == ["/api/history/FPT/candles"]
    book = await browser.evaluate("[...document.querySelectorAll('#detail-book tbody tr')].map((tr) => "
                                  "[...tr.children].map((td) => td.dataset.value === undefined ? null : "
                                  "Number(td.dataset.value)))")
    _, rows, _ = await get(f"{up.url}/api/market/book/FPT")
    assert book == [[*(rows["bids"][i] if i < len(rows["bids"]) else (None, None))[::-1],
                     *(rows["asks"][i] if i < len(rows["asks"]) else (None, None))]
                    for i in range(max(len(rows["bids"]), len(rows["asks"])))]

    total = await feed_trade(up, state_dir, "FPT", 126800.0, 1300)
    newest = "document.querySelector('#detail-ticks tbody tr')"
    await browser.wait_for(f"{newest}?.dataset.total === '{total}'", timeout=30)
    shown = await browser.evaluate(f"(() => {{ const tr = {newest}; return {{type: tr.dataset.type, "
                                   "cells: Object.fromEntries([...tr.children].map((td) => [td.dataset.field, "
                                   "td.textContent]))}; })()")
    assert pick(shown["cells"], "time", "price", "volume") == {"time": "14:45:40", "price": "126,800",
                                                                  "volume": "1,300"}
    assert await browser.evaluate("document.querySelectorAll('#detail-ticks tbody tr').length") == (
        expected["ticks"]["FPT"] + 1)
    # The forming candle (14:45) took it: same number of candles, its close the new price.
    await browser.wait_for("document.getElementById('detail-readout').dataset.value === '126800'")
    assert await browser.evaluate("Number(document.getElementById('detail-candles').dataset.candles)") == candles
    label = await browser.evaluate("document.getElementById('detail-candles').getAttribute('aria-label')")
    assert f"FPT: {candles} nến 1 phút từ 09:15 đến 14:45, giá đóng cửa cuối 126,800, " in label, label
    # ... and the board row behind the dialog, by its board delta.
    await browser.wait_for(f"{cell('FPT', 'total_volume')} === '{total}' && {cell('FPT', 'last_volume')} === '1300'")
    # The classification shown is the classifier's, as the history API has it once the recorder wrote it.
    async def recorded() -> bool:
        _, ticks, _ = await get(f"{up.url}/api/history/FPT/ticks")
        return bool(ticks) and ticks[-1]["total_volume"] == total
    await eventually(recorded, timeout=30, interval=0.5)
    _, ticks, _ = await get(f"{up.url}/api/history/FPT/ticks")
    assert shown["type"] == ticks[-1]["trade_type"]
    await asyncio.sleep(4)  # longer than any poll the detail used to make: it never asks again
    assert history_requests(browser, requests) == ["/api/history/FPT/candles"]
    await browser.screenshot(ARTIFACTS / "detail.png")

    sent = len(browser.sent)
    await browser.press("Escape")
    await browser.wait_for("document.getElementById('detail').hidden")
    assert sent_since(browser, sent) == [{"op": "unsubscribe", "channel": "trades", "symbol": "FPT"},
                                         {"op": "unsubscribe", "channel": "candles", "symbol": "FPT"}]


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

            await browser.viewport(1600, 1000)
            await check_board_columns(browser, up.url, "group=VN30", ["ACB", "FPT", "TCB"])
            await browser.screenshot(ARTIFACTS / "board-vn30.png")
            await check_cues(browser, expected)
            await check_tabs(browser, up.url)
            await browser.screenshot(ARTIFACTS / "board-futures.png")
            await check_projected(browser)
            await check_watchlist(browser, up.url)
            await browser.screenshot(ARTIFACTS / "board-watchlist.png")
            await check_live_detail(browser, up, tmp_path, expected)
            await check_alerts(browser, up.url)
            assert browser.problems == []
    finally:
        await up.stop()


async def check_alerts(browser: Browser, url: str) -> None:
    """Beside the board, the day's alerts newest first, as REST lists them; a new critical alert raises a toast; a
    user rule added in the editor is in the gateway's rules (KV alert_rules), and its ✕ deletes it."""
    _, listed, _ = await get(f"{url}/api/market/alerts", params={"limit": "50"})
    assert len(listed) == DAY_ALERTS
    await browser.wait_for(f"document.querySelectorAll('#alerts-feed li[data-type]').length === {DAY_ALERTS}")
    shown = await browser.evaluate("[...document.querySelectorAll('#alerts-feed li')].map("
                                   "li => [li.querySelector('time').dateTime, li.querySelector('b').textContent, "
                                   "li.dataset.type])")
    assert shown == [[a["timestamp"], a["symbol"], a["type"]] for a in listed]
    assert await browser.evaluate("document.getElementById('toasts').children.length") == 0  # none for a snapshot
    await browser.evaluate("""(async () => {
      const { applyAlerts } = await import('/static/alerts.js');
      applyAlerts({ type: 'delta', channel: 'alerts', seq: 1e9, data: { alerts: [{
        type: 'volume_spike', severity: 'critical', symbol: 'HPG', trading_date: '2026-11-24',
        timestamp: '2026-11-24T14:45:30+07:00', rule: 'volume_spike', values: { volume: 1 },
        message_vi: 'HPG: lệnh 500,000 cp', message_en: 'HPG: a 500,000-share trade' }] } });
    })()""")
    toast = await browser.wait_for("document.querySelector('#toasts .toast')?.textContent")
    assert toast == "HPG lệnh 500,000 cp"
    assert await browser.evaluate("document.querySelector('#alerts-feed li b').textContent") == "HPG"
    await browser.screenshot(ARTIFACTS / "alerts.png")

    await browser.evaluate("""(() => {
      document.querySelector('#alerts details').open = true;
      const form = document.getElementById('rule-form');
      form.elements.symbol.value = 'fpt';
      form.elements.kind.value = 'price_above';
      form.elements.value.value = '130000';
      form.elements.severity.value = 'critical';
      form.requestSubmit();
    })()""")
    await browser.wait_for("document.querySelectorAll('#rules li').length === 1")
    _, rules, _ = await get(f"{url}/api/alerts/rules")
    assert [(r["symbol"], r["kind"], r["value"], r["severity"]) for r in rules] == [
        ("FPT", "price_above", 130000, "critical")]
    assert await browser.evaluate("document.querySelector('#rules li').dataset.rule") == rules[0]["id"]
    await browser.evaluate("document.querySelector('#rules li button').click()")
    await browser.wait_for("document.querySelectorAll('#rules li').length === 0 && "
                           "!document.getElementById('rules-empty').hidden")
    assert (await get(f"{url}/api/alerts/rules"))[1] == []


async def check_cues(browser: Browser, expected: dict[str, Any]) -> None:
    """A last price says its trend without colour: ▲ / ▼ / ■ for up / down / reference, a boxed T / S at the ceiling /
    floor (and the word in its title); the number's text and data-value stay as they were. No symbol of the recorded
    day ends at its ceiling or floor, so the page's own store is handed two board rows that do, as a board delta of
    the topic shown would (its seq just above the last one applied, so the next real delta still applies)."""
    prices = expected["prices"]
    for symbol, glyph, title in (("BID", "▲", "Tăng"), ("ACB", "▼", "Giảm"), ("SHB", "■", "Tham chiếu")):
        shown = await browser.evaluate(cue(td(symbol, "last_price")))
        assert shown["content"].startswith(f'"{glyph}"'), shown
        assert shown["title"] == title
        assert float(shown["value"]) == prices[symbol]["last_price"]
        assert shown["text"] == f"{prices[symbol]['last_price']:,.0f}"
    await browser.evaluate("""(async () => {
      const { applyBoard, store } = await import('/static/store.js');
      const at = (symbol, field) => {
        const row = store.board.get(symbol);
        return { ...row, last_price: row[field], change: row[field] - row.ref_price };
      };
      applyBoard({ type: 'delta', channel: 'board', topic: store.boardTopic, seq: store.boardSeq + 0.5,
                   data: { FPT: at('FPT', 'ceiling'), MWG: at('MWG', 'floor') } });
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
    """The default `up` (the simulator as the feed): every panel fills in (the market views too), the HNX tab shows
    the simulated HNX stocks, the page stays quiet, and the screenshots saved are the kind the README shows."""
    assert CHROMIUM is not None
    up = launch(tmp_path, free_port())
    try:
        await up.read_until("Ready:")
        async with Browser(CHROMIUM) as browser:
            await browser.viewport(1600, 1000)
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
            # The market views: each index's breadth, the movers, VN30's contributions (the simulator has the
            # members' listed shares, so every member is weighted).
            await browser.wait_for("document.querySelector('#breadth tr[data-index=VN30] [data-field=advances]')"
                                   "?.dataset.value !== undefined", timeout=30)
            await browser.wait_for("document.querySelectorAll('#movers-volume li[data-symbol]').length === 5")
            await browser.wait_for("document.querySelectorAll('#contribution [data-symbol]').length > 0")
            phase = await browser.evaluate("document.querySelector('#phase')?.dataset.phase")
            assert phase in ("pre_open", "ato", "continuous", "lunch", "atc", "post_close", "closed")
            await browser.screenshot(ARTIFACTS / "dashboard-simulated.png")

            # The HNX tab: the simulated HNX stocks, as the REST board has them (their books may be 10 deep there,
            # the board shows the best three).
            await browser.evaluate("document.getElementById('tab-hnx').click()")
            _, hnx, _ = await get(f"{up.url}/api/market/board?exchange=HNX")
            assert hnx, "the simulator trades HNX stocks"
            await browser.wait_for(f"{BOARD_ROWS} === {','.join(row['symbol'] for row in hnx)!r}", timeout=30)
            await browser.screenshot(ARTIFACTS / "board-hnx-simulated.png")
            await browser.evaluate("document.getElementById('tab-vn30').click()")
            await browser.wait_for(
                f"document.querySelectorAll('#board tr[data-symbol] [data-field=last_price][data-value]').length"
                f" === {len(basket['symbols'])}", timeout=30)

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
            # The board without its flashes (reduced motion), as the README shows it.
            await browser.evaluate("window.stockTracker.closeDetail()")
            await browser.screenshot(ARTIFACTS / "board-vn30-simulated.png")
            assert browser.problems == []
    finally:
        await up.stop()
