"""What became of a send after it left, summarised on the send row.

The provider's events are kept one by one in `Delivery` (engine/delivery/events.py). Recording one also
marks its outcome on the send: a bit of `Send.outcomes` and the outcome's first time (`Send.opened_at`,
...). The report then counts outcomes in the same pass as statuses, and per month from the outcome's own
time, without joining or de-duplicating provider events. Only a newly stored event touches the send, and
the first time is the earliest seen, so replays and events arriving out of order change nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from engine.store.tables import OUTCOMES, Send, table_of

SEND = table_of(Send)


def bit(outcome: str) -> int:
    """The outcome's bit in Send.outcomes."""
    return 1 << OUTCOMES.index(outcome)


def first_at(outcome: str) -> ColumnElement[Any]:
    """The send's column holding the time of the outcome's earliest provider event."""
    return SEND.c[f"{outcome}_at"]


def outcome_names(mask: int) -> list[str]:
    return [outcome for outcome in OUTCOMES if mask & bit(outcome)]


def mark_outcomes(connection: Connection, events: Iterable[tuple[int, str, datetime]]) -> None:
    """Mark newly stored provider events (send id, outcome, time) on their sends."""
    firsts: dict[int, dict[str, datetime]] = defaultdict(dict)
    for send_id, outcome, at in events:
        firsts[send_id][outcome] = min(at, firsts[send_id].get(outcome, at))
    if firsts:
        # in send order, so that concurrent posts lock the sends they share in the same order
        connection.execute(
            _MARK,
            [
                {"send": send_id, "bits": sum(bit(o) for o in times), **{o: times.get(o) for o in OUTCOMES}}
                for send_id, times in sorted(firsts.items())
            ],
        )


def _earlier(column: ColumnElement[Any], new: ColumnElement[Any]) -> ColumnElement[Any]:
    """The earlier of a stored first time and a new one, either of them possibly null."""
    return case((new.is_(None), column), (column.is_(None), new), (column > new, new), else_=column)


# A send's new outcome bits and first times (null where the post brought none); row locks make
# concurrent posts about one send add up rather than overwrite.
_MARK = (
    update(SEND)
    .where(SEND.c.id == bindparam("send"))
    .values(
        {
            SEND.c.outcomes: SEND.c.outcomes.op("|")(bindparam("bits")),
            **{first_at(o): _earlier(first_at(o), bindparam(o, type_=SEND.c.sent_at.type)) for o in OUTCOMES},
        }
    )
)
