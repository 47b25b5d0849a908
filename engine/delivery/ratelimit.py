"""The sender's rate limits (`sender.rate`), honoured by every daemon on one store, and the pause
every daemon takes when the provider says to slow down.

- `per_second` is a pace on the wall clock, like worker liveness (it is about processes, not
  campaigns). Each batch reserves its slots from the store's `send_rate` row under its row lock:
  the next free ones, `1 / per_second` apart, after whatever any daemon reserved before. The batch
  then hands each message to the sender at its slot. Reserving ahead, rather than counting what
  went, lets daemons interleave without ever exceeding the pace together. One slot at most is
  saved up while idle (so that a daemon alone, preparing its next batch between two, keeps the
  pace), so no second holds more slots than the pace and one.
- `per_hour` and `per_day` are sliding windows on the business clock (`--now`), counted from the
  ledger itself: the sends that went or may have gone (`COUNTED_FOR_CAP`) whose `sent_at` falls
  within the window. They are counted and the batch claimed in one transaction holding that same
  row lock, so two daemons never both spend the last of a window. What does not fit waits,
  `deferred` with the reason `rate_limit`, until the window has room again; nothing is dropped.
- A provider's "slow down" (HTTP 429, a throttling error, SMTP 421) pauses every daemon until its
  Retry-After, or for a backoff that doubles with each throttle in a row; the messages it refused
  wait as `throttled`, their try not counted against `scheduler.max_attempts`.

The clock and the sleep are injected, so a test can drive the pace without waiting for it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar, cast

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlmodel import col

from engine.config.settings import Config
from engine.delivery.statuses import COUNTED_FOR_CAP
from engine.store.dialect import insert_new
from engine.store.tables import Send, SendRate, table_of

T = TypeVar("T")
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
LATE = 1.0  # seconds past its slot after which a message takes a fresh one


def backoff(attempt: int, retry_after: float | None) -> timedelta:
    """Exponential backoff with jitter (from a minute, at most an hour), never sooner than the
    provider asked."""
    seconds = min(60 * 2 ** (attempt - 1), 3600) * random.uniform(0.5, 1.5)
    return timedelta(seconds=max(seconds, retry_after or 0))


@dataclass(frozen=True)
class Window:
    """One sliding window: at most `limit` sends within `span` before now."""

    name: str  # the config key: per_hour, per_day
    span: timedelta
    limit: int
    used: int  # counted in the window when the batch began

    def frees_at(self, connection: Connection, now: datetime, claimed: int) -> datetime | None:
        """When the window has room for one more after `claimed` more sends at `now`, or None if it
        has room already."""
        drop = self.used + claimed - self.limit  # sends that must leave the window first
        if drop < 0:
            return None
        if drop >= self.used:  # one of those just claimed must leave: at `now` + span
            return now + self.span
        oldest = connection.execute(
            select(col(Send.sent_at))
            .where(_in_window(now - self.span))
            .order_by(col(Send.sent_at))
            .offset(drop)
            .limit(1)
        ).scalar_one()
        return max(cast(datetime, oldest) + self.span, now)  # in the window, so it has a sent_at


@dataclass(frozen=True)
class Gate:
    """What the limits allow the batch about to be claimed."""

    paused_until: datetime | None  # set when every daemon holds off until then
    windows: Sequence[Window]

    @property
    def budget(self) -> int | None:
        """How many more sends every window allows now; None without a window."""
        return min((max(0, w.limit - w.used) for w in self.windows), default=None)

    def deferral(self, connection: Connection, now: datetime, claimed: int) -> tuple[str, datetime]:
        """Why and until when the sends beyond the budget wait, after `claimed` were claimed: the
        latest of the windows that are full."""
        full = [(w, at) for w in self.windows if (at := w.frees_at(connection, now, claimed)) is not None]
        window, until = max(full, key=lambda pair: pair[1])
        return f"rate_limit: sender.rate.{window.name} {window.limit} reached", until


class RateLimiter:
    """The limits of one sender (its `sender.backend` names its `send_rate` row)."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = config.sender.rate
        self.sender = config.sender.backend[:200]
        self.engine = engine
        self.clock = clock
        self.sleep = sleep
        self.throttles = 0  # as the last gate read them

    def batch_size(self, size: int) -> int:
        """At most a second's worth a batch when paced, so that claimed sends wait little for
        their slots and daemons take turns."""
        if self.rate.per_second is None:
            return size
        return max(1, min(size, math.ceil(self.rate.per_second)))

    @property
    def windowed(self) -> bool:
        """Whether the sender has an hourly or daily limit, counted from the ledger."""
        return self.rate.per_hour is not None or self.rate.per_day is not None

    def gate(self, connection: Connection, now: datetime, lock: bool = True) -> Gate:
        """Read the pause and count the windows, within the claim's transaction. With `lock` (and
        a window to count) the row is locked until that transaction ends, so claims take turns."""
        row = self._row(connection, lock=lock and self.windowed)
        self.throttles = row.throttles if row else 0
        paused = row.paused_until if row and row.paused_until and row.paused_until > now else None
        windows = [
            Window(name, span, limit, _count(connection, now - span))
            for name, span, limit in (("per_hour", HOUR, self.rate.per_hour), ("per_day", DAY, self.rate.per_day))
            if limit is not None
        ]
        return Gate(paused, windows)

    def pace(self, count: int) -> list[float]:
        """Reserve the next `count` slots (wall-clock seconds) in a transaction of its own; all
        at once, now, when there is no `per_second`."""
        if self.rate.per_second is None or count == 0:
            return [self.clock()] * count
        interval = 1 / self.rate.per_second
        with self.engine.begin() as connection:
            row = self._row(connection, lock=True, create=True)
            assert row is not None
            start = max(row.next_free, self.clock() - interval)
            connection.execute(
                update(SendRate).where(col(SendRate.sender) == self.sender).values(next_free=start + count * interval)
            )
        return [start + i * interval for i in range(count)]

    def in_turn(self, items: Sequence[T]) -> Iterator[list[T]]:
        """The items in groups, each yielded once its slots (reserved here) have come: those whose
        slots have all passed go together, so a sender slower than the pace is never held back
        further. A process held up for more than `LATE` (stopped, swapping, a provider that
        stalled) takes fresh slots for the rest rather than sending them all at once."""
        slots = self.pace(len(items))
        start = 0
        while start < len(items):
            if self.rate.per_second is not None and self.clock() - slots[start] > LATE:
                slots = [*slots[:start], *self.pace(len(items) - start)]
            wait = slots[start] - self.clock()
            if wait > 0:
                self.sleep(wait)
            now = self.clock()
            end = start + 1
            while end < len(items) and slots[end] <= now:
                end += 1
            yield list(items[start:end])
            start = end

    def throttled(self, connection: Connection, now: datetime, retry_after: float | None) -> datetime:
        """The provider said to slow down: every daemon holds off for the wait it asked (its
        Retry-After), or else for a backoff that doubles with each throttle in a row. Returns until
        when."""
        row = self._row(connection, lock=True, create=True)
        assert row is not None
        wait = timedelta(seconds=retry_after) if retry_after is not None else backoff(row.throttles + 1, None)
        until = now + wait
        if row.paused_until is not None and row.paused_until > until:
            until = row.paused_until
        connection.execute(
            update(SendRate)
            .where(col(SendRate.sender) == self.sender)
            .values(paused_until=until, throttles=row.throttles + 1)
        )
        self.throttles = row.throttles + 1
        return until

    def went_through(self, connection: Connection) -> None:
        """A message went: the next throttle starts the backoff afresh."""
        if self.throttles:
            connection.execute(update(SendRate).where(col(SendRate.sender) == self.sender).values(throttles=0))
            self.throttles = 0

    def _row(self, connection: Connection, lock: bool, create: bool = False) -> Row[float, datetime | None, int] | None:
        """The sender's row (next_free, paused_until, throttles); made on first use when it is to
        be written or locked, since a lock needs a row to hold."""
        query = select(col(SendRate.next_free), col(SendRate.paused_until), col(SendRate.throttles)).where(
            col(SendRate.sender) == self.sender
        )
        if lock:
            query = query.with_for_update()
        row = connection.execute(query).first()
        if row is None and (create or lock):
            fresh = {"sender": self.sender, "next_free": 0.0, "paused_until": None, "throttles": 0}
            connection.execute(insert_new(connection, table_of(SendRate), ["sender"]), [fresh])
            row = connection.execute(query).first()
        return row


def _in_window(since: datetime) -> ColumnElement[bool]:
    return and_(col(Send.status).in_(COUNTED_FOR_CAP), col(Send.sent_at) > since)


def _count(connection: Connection, since: datetime) -> int:
    return int(connection.execute(select(func.count()).select_from(Send).where(_in_window(since))).scalar_one())
