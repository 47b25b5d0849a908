"""What became of a send after it left, summarised on the send row.

The provider's events are kept one by one in `Delivery`. Recording one also marks its outcome on the
send: a bit of `Send.outcomes` and the outcome's first time (`Send.opened_at`, ...). The report then
counts outcomes in the same pass as statuses, and per month from the outcome's own time, without
joining or de-duplicating provider events. Only a newly stored event touches the send, and the first
time is the earliest seen, so replays and events arriving out of order change nothing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from engine.store.dialect import insert_new
from engine.store.tables import OUTCOME_KINDS, Delivery, Send

# An outcome's bit in Send.outcomes is 1 << its index here.
OUTCOMES = tuple(OUTCOME_KINDS)
OUTCOME_OF_KIND = {kind: outcome for outcome, kinds in OUTCOME_KINDS.items() for kind in kinds}


def bit(outcome: str) -> int:
    return 1 << OUTCOMES.index(outcome)


def first_at(outcome: str) -> ColumnElement:
    """The send's column holding the time of the outcome's earliest provider event."""
    return Send.__table__.c[f"{outcome}_at"]


def outcome_names(mask: int) -> list[str]:
    return [outcome for outcome in OUTCOMES if mask & bit(outcome)]


def record_deliveries(connection: Connection, deliveries: list[dict[str, Any]]) -> int:
    """Store provider events (send_id, kind, at, provider_event_id) not stored yet and mark their
    outcomes on their sends; returns how many were new."""
    if not deliveries:
        return 0
    statement = insert_new(connection, Delivery.__table__, ["provider_event_id"]).returning(
        Delivery.send_id, Delivery.kind, Delivery.at
    )
    new = connection.execute(statement, deliveries).all()
    firsts: dict[int, dict[str, datetime]] = defaultdict(dict)
    for send_id, kind, at in new:
        if (outcome := OUTCOME_OF_KIND.get(kind)) is not None:
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
    return len(new)


def _earlier(column: ColumnElement, new: ColumnElement) -> ColumnElement:
    """The earlier of a stored first time and a new one, either of them possibly null."""
    return case((new.is_(None), column), (column.is_(None), new), (column > new, new), else_=column)


# A send's new outcome bits and first times (null where the post brought none); row locks make
# concurrent posts about one send add up rather than overwrite.
_MARK = (
    update(Send)
    .where(Send.id == bindparam("send"))
    .values(
        {
            Send.outcomes: Send.outcomes.op("|")(bindparam("bits")),
            **{first_at(o): _earlier(first_at(o), bindparam(o, type_=Send.__table__.c.sent_at.type)) for o in OUTCOMES},
        }
    )
)
