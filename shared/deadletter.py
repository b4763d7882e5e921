"""Dead letters: a stream message a service cannot use is set aside on the DEADLETTER stream with why, counted, and
logged once per reason per minute; then the service goes on with the next message. Nothing is silently skipped and
nothing stops the day: the message stays readable (`stocktracker dlq`), and the position passes it only once its
dead letter is acknowledged (it goes out through the service's publisher, whose acknowledgements a checkpoint or a
committed position waits for).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
from prometheus_client import Counter

from shared import bus
from shared.market import LONGEST_CLOSURE_DAYS, in_market_era
from shared.messages.domain import SYMBOL_PATTERN, DeadLetter, NonFiniteError
from shared.subjects import DEAD_LETTERS
from shared.throttle import Throttle

DEAD_LETTERED = Counter("stocktracker_dead_letters_total", "Stream messages set aside on DEADLETTER, by reason",
                        ["reason"])
DEAD_LETTER_KEPT_BYTES = 256 * 1024  # of the payload: a dead letter stays well under the bus's 1 MiB


class Refused(ValueError):
    """A message its receiver will not use, with a reason for the dead letter (e.g. subject_mismatch)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


_SYMBOL = re.compile(SYMBOL_PATTERN)


def subject_instrument(subject: str) -> str:
    """The instrument a subject names (its last token) when it is an instrument code, else "". Readers work it out
    once per subject: a pattern costs more than decoding a message."""
    token = subject.rpartition(".")[2]
    return token if _SYMBOL.match(token) else ""


def inbound(subject: str, token: str, payload: bytes, decode: Callable[[bytes], Any],
            instrument_of: Callable[[Any], str], latest: date | None = None) -> Any:
    """A stream message as its reader may use it: its subject names an instrument (`token`, from
    `subject_instrument`), its payload decodes into its bounded domain type, names the same instrument, and carries
    a trading date in the market's era and, when the reader knows the latest date it handled, at most
    LONGEST_CLOSURE_DAYS after it. Raises `Refused`, or msgspec's DecodeError (ValidationError), for a dead letter."""
    if not token:
        raise Refused("bad_subject", f"{subject.rpartition('.')[2]!r} is not an instrument code")
    message = decode(payload)
    instrument = instrument_of(message)
    if instrument != token:
        raise Refused("subject_mismatch", f"the payload's instrument {instrument!r} is not the subject's {token!r}")
    day: date = message.trading_date
    if not in_market_era(day):
        raise Refused("implausible_date", f"trading date {day} is outside the market's era")
    if latest is not None and day > latest + timedelta(days=LONGEST_CLOSURE_DAYS):
        raise Refused("implausible_date", f"trading date {day} is more than {LONGEST_CLOSURE_DAYS} days after the "
                                          f"latest handled, {latest}")
    return message


def reason_of(err: BaseException) -> str:
    if isinstance(err, Refused):
        return err.reason
    if isinstance(err, msgspec.ValidationError):
        return "invalid"  # well-formed JSON, but a field of the wrong type or beyond its bound
    if isinstance(err, msgspec.DecodeError):
        return "undecodable"
    if isinstance(err, NonFiniteError):
        return "non_finite"
    return "handler_error"


class DeadLetters:
    """A service's way to the DEADLETTER stream."""

    def __init__(self, service: str, publisher: bus.Publisher, log: Any) -> None:
        self.service = service
        self.count = 0
        self._publisher = publisher
        self._log = log
        self._throttle = Throttle()
        self._encode = msgspec.json.Encoder().encode

    async def put(self, *, stream: str, subject: str, sequence: int, payload: bytes, error: BaseException) -> None:
        reason = reason_of(error)
        letter = DeadLetter(
            service=self.service, stream=stream, subject=subject, sequence=sequence, reason=reason,
            error=f"{type(error).__name__}: {error}"[:4096],
            payload=payload[:DEAD_LETTER_KEPT_BYTES].decode("utf-8", "backslashreplace"),
            payload_bytes=len(payload), dead_lettered_at=datetime.now(UTC),
        )
        # One dead letter per message, however often it is read again (a restart before the next checkpoint).
        await self._publisher.publish(DEAD_LETTERS(self.service), self._encode(letter),
                                      f"dlq:{self.service}:{stream}:{sequence}")
        self.count += 1
        DEAD_LETTERED.labels(reason).inc()
        if self._throttle.due(reason):
            self._log.warning("message dead-lettered", reason=reason, subject=subject, sequence=sequence,
                              error=letter.error, dead_letters=self.count)
