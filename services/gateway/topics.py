"""The filtered WebSocket channels, one hub per distinct subscription (a topic):

- `board` (`{"op": "subscribe", "channel": "board", "symbols": [...]}`, or `"group": "VN30"`, or `"exchange": "HNX"`,
  or several of them, narrowing each other): snapshot `{SYMBOL: BoardQuote}`, deltas `{SYMBOL: BoardQuote | null}` of
  the rows that changed;
- `trades` (`"symbol": "FPT"`): snapshot `{"trades": [the latest classified trades]}`, deltas `{"trades": [new ones,
  in order]}`;
- `candles` (`"symbol": "FPT"`): snapshot `{"candles": [today's latest 1-minute candles, the forming one last]}`,
  deltas `{"candles": [the candles that changed]}`, each a `Candle` as `/api/history/{symbol}/candles` answers;
- `alerts` (every alert, or `"symbol": "FPT"`'s): snapshot `{"alerts": [the latest 50, oldest first]}`, deltas
  `{"alerts": [the new ones, in order]}`.

At each phase's turn (WS_PHASES of them spread over a throttle interval), what changed since that phase's last turn:
the board rows that changed are encoded once each (whatever the number of topics showing them), each topic's delta
is assembled from those bytes and encoded once for all of its clients of that phase."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from typing import Any

import msgspec
from prometheus_client import Gauge

from services.gateway.alerts import AlertLog, of_symbol
from services.gateway.board import MAX_SYMBOLS, Board, BoardFilter, read_filter
from services.gateway.history import Candle, candle_of
from services.gateway.hub import ChannelHub, Client, Request
from services.gateway.routes import is_instrument
from services.gateway.tape import Tape
from shared.candles import MinuteCandle
from shared.messages.domain import Alert, ClassifiedTrade

_encode = msgspec.json.Encoder().encode
# The largest request a socket may send: a board subscription of MAX_SYMBOLS symbols of the longest length (30), each
# quoted and comma-separated with room for spaces; larger, aiohttp closes the socket (1009, message too big).
MAX_REQUEST_BYTES = 512 + MAX_SYMBOLS * (30 + 8)
ALERTS_SHOWN = 50  # alerts in an `alerts` snapshot: the latest
WS_TOPICS = Gauge("stocktracker_gateway_ws_topics", "Distinct subscriptions of the filtered channels, by channel",
                  ["channel"])


@dataclass
class _Changes:
    """What changed since a phase's last turn."""

    rows: set[str] = field(default_factory=set)  # board rows, by symbol
    trades: dict[str, list[ClassifiedTrade]] = field(default_factory=dict)  # new, in order, by symbol
    candles: dict[str, dict[datetime, MinuteCandle]] = field(default_factory=dict)  # by symbol, by minute
    alerts: list[Alert] = field(default_factory=list)  # new, in order

    def add(self, rows: set[str], trades: dict[str, list[ClassifiedTrade]],
            candles: dict[str, list[MinuteCandle]], alerts: list[Alert]) -> None:
        self.rows |= rows
        self.alerts += alerts
        for symbol, new in trades.items():
            self.trades.setdefault(symbol, []).extend(new)
        for symbol, changed in candles.items():
            self.candles.setdefault(symbol, {}).update((candle.minute, candle) for candle in changed)


class FilteredChannels:
    channels = frozenset({"board", "trades", "candles", "alerts"})

    def __init__(self, board: Board, tape: Tape, queue_size: int, send_timeout_s: float, phases: int = 1,
                 alerts: AlertLog | None = None) -> None:
        self.board = board
        self.tape = tape
        self.alerts = alerts or AlertLog()
        self.queue_size = queue_size
        self.send_timeout_s = send_timeout_s
        self.phases = phases
        self.hubs: dict[str, ChannelHub] = {}  # by hub key
        self._encoded: dict[str, msgspec.Raw] = {}  # board rows' bytes, until they change
        self._pending = [_Changes() for _ in range(phases)]  # per phase, since its last turn
        self._turn = _Changes()  # of the phase whose turn it is
        self._sockets = count()

    # --- subscriptions -------------------------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, int]]:
        """Topics and their followers (a socket counted once per topic it follows) by channel; the sockets following
        any topic, by phase."""
        topics: Counter[str] = Counter()
        followers: Counter[str] = Counter()
        sockets: set[Client] = set()
        for hub in self.hubs.values():
            topics[hub.name] += 1
            followers[hub.name] += len(hub.clients)
            sockets |= hub.clients
        phases = Counter(str(socket.phase) for socket in sockets)
        return {"topics": dict(topics), "followers": dict(followers), "sockets_by_phase": dict(phases)}

    def next_phase(self) -> int:
        return next(self._sockets) % self.phases

    def hub_for(self, request: Request) -> ChannelHub | str:
        if request.channel == "board":
            chosen = read_filter(request.exchange, request.group, request.symbols, self.board.groups())
            if isinstance(chosen, tuple):
                return chosen[1]
            if request.symbol is not None:
                return 'board is filtered by "symbols", "group" or "exchange"'
            return self._hub("board", chosen.topic, lambda: self._board_state(chosen),
                             lambda: self._board_delta(chosen))
        if request.symbols is not None or request.group is not None or request.exchange is not None:
            return f'{request.channel} is filtered by "symbol" only'
        symbol = (request.symbol or "").strip().upper()
        if request.channel == "alerts":
            return self._alerts_hub(symbol or None)
        if not is_instrument(symbol):
            return f'{request.channel} needs "symbol": one symbol, [A-Za-z0-9_-]{{1,30}}'
        if request.channel == "trades":
            return self._hub("trades", symbol, lambda: {"trades": self.tape.trades(symbol)},
                             lambda: self._listed("trades", self._turn.trades.get(symbol)))
        return self._hub("candles", symbol, lambda: {"candles": [candle_of(c) for c in self.tape.candles(symbol)]},
                         lambda: self._listed("candles", self._turn_candles(symbol)))

    def _alerts_hub(self, symbol: str | None) -> ChannelHub | str:
        """Every alert (topic `all`), or one symbol's."""
        if symbol is not None and not is_instrument(symbol):
            return 'alerts is filtered by "symbol": one symbol, [A-Za-z0-9_-]{1,30}'
        return self._hub("alerts", symbol or "all",
                         lambda: {"alerts": self.alerts.select(ALERTS_SHOWN, symbol=symbol)[::-1]},
                         lambda: self._listed("alerts", of_symbol(self._turn.alerts, symbol)))

    def _hub(self, channel: str, topic: str, state: Any, delta: Any) -> ChannelHub:
        key = f"{channel}:{topic}"
        hub = self.hubs.get(key)
        if hub is None:
            hub = self.hubs[key] = ChannelHub(channel, state, delta, self.queue_size, self.send_timeout_s,
                                              topic=topic, on_idle=self._drop)
            WS_TOPICS.labels(channel).inc()
        return hub

    def _drop(self, hub: ChannelHub) -> None:
        if self.hubs.get(hub.key) is hub:
            del self.hubs[hub.key]
            WS_TOPICS.labels(hub.name).dec()

    # --- at each phase's turn -----------------------------------------------------------------------------------

    def broadcast(self, phase: int = 0) -> None:
        """Every topic's delta since `phase`'s last turn, to its clients of that phase."""
        rows = self.board.view.take_board_changes()
        for symbol in rows:
            self._encoded.pop(symbol, None)
        trades, candles = self.tape.take()
        alerts = self.alerts.take()
        for pending in self._pending:
            pending.add(rows, trades, candles, alerts)
        self._turn, self._pending[phase] = self._pending[phase], _Changes()
        for hub in list(self.hubs.values()):
            hub.broadcast(phase)

    def _turn_candles(self, symbol: str) -> list[Candle] | None:
        changed = self._turn.candles.get(symbol)
        return [candle_of(candle) for candle in changed.values()] if changed else None

    def _row(self, symbol: str) -> msgspec.Raw | None:
        raw = self._encoded.get(symbol)
        if raw is None:
            quote = self.board.quote(symbol)
            if quote is None:
                return None
            raw = self._encoded[symbol] = msgspec.Raw(_encode(quote))
        return raw

    def _board_state(self, board_filter: BoardFilter) -> dict[str, msgspec.Raw | None]:
        return {symbol: self._row(symbol) for symbol in sorted(self.board.selects(board_filter))}

    def _board_delta(self, board_filter: BoardFilter) -> dict[str, msgspec.Raw | None] | None:
        changed = self._turn.rows
        if board_filter.symbols is not None and len(board_filter.symbols) < len(changed):
            changed = board_filter.symbols & changed
        chosen = sorted(symbol for symbol in changed if self.board.matches(board_filter, symbol))
        return {symbol: self._row(symbol) for symbol in chosen} or None

    @staticmethod
    def _listed(name: str, items: list[Any] | None) -> dict[str, list[Any]] | None:
        return {name: items} if items else None
