"""Campaigns whose sending is held: the kill switch of `lifecycle pause` / `lifecycle resume`, which
the deliverability guard (engine/delivery/guard.py) pulls by itself.

The state lives in the store (`campaign_pause`, one row a campaign), so every daemon sharing it
honours a pause: the tick reads it before each batch of a campaign, and a paused campaign's due sends
stay as they are (scheduled or deferred) until it is resumed. Evaluation goes on meanwhile, so
entries are still recorded; a send whose `expire_after` passes while it is held expires as it would
while the engine was stopped.

A pause is kept once: pausing a paused campaign changes nothing (its first reason, time and author
stay), whichever daemons or operators try it at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from engine.store.dialect import insert_new
from engine.store.tables import CampaignPause, table_of

PAUSE = table_of(CampaignPause)


class PausedBy(StrEnum):
    GUARD = "guard"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Pause:
    campaign: str
    reason: str
    since: datetime
    by: str

    def as_dict(self) -> dict[str, Any]:
        """As `lifecycle report --format json` and `lifecycle tick --json` show it."""
        return {"reason": self.reason, "since": self.since.isoformat(), "by": self.by}


def pause(
    connection: Connection,
    campaign: str,
    reason: str,
    by: PausedBy,
    now: datetime,
    figures: dict[str, Any] | None = None,
) -> Pause | None:
    """Hold the campaign's sending from every daemon's next batch; None when it was already paused.
    `figures`: what the guard saw, for its alert."""
    row = {"campaign": campaign, "paused_at": now, "paused_by": by, "reason": reason, "figures": figures}
    inserted = connection.execute(insert_new(connection, PAUSE, ["campaign"]).returning(PAUSE.c.campaign), [row])
    if not inserted.all():  # paused before: again only if it was resumed since (row locks serialise the two)
        again = connection.execute(
            update(PAUSE)
            .where(PAUSE.c.campaign == campaign, PAUSE.c.resumed_at.is_not(None))
            .values(**row, alerted_at=None, resumed_at=None)
            .returning(PAUSE.c.campaign)
        )
        if not again.all():
            return None
    return Pause(campaign, reason, now, by)


def resume(connection: Connection, campaign: str, now: datetime) -> Pause | None:
    """Let the campaign send again from every daemon's next batch; the pause lifted, or None when
    it was not paused."""
    lifted = connection.execute(
        update(PAUSE)
        .where(PAUSE.c.campaign == campaign, PAUSE.c.resumed_at.is_(None))
        .values(resumed_at=now)
        .returning(PAUSE.c.campaign, PAUSE.c.reason, PAUSE.c.paused_at, PAUSE.c.paused_by)
    ).first()
    return Pause(*lifted) if lifted else None


def active(connection: Connection, campaign: str | None = None) -> dict[str, Pause]:
    """The campaigns paused now (or only `campaign`, when it is), by name."""
    query = select(PAUSE.c.campaign, PAUSE.c.reason, PAUSE.c.paused_at, PAUSE.c.paused_by).where(
        PAUSE.c.resumed_at.is_(None)
    )
    if campaign is not None:
        query = query.where(PAUSE.c.campaign == campaign)
    return {row.campaign: Pause(*row) for row in connection.execute(query)}


def resumed_at(connection: Connection) -> dict[str, datetime]:
    """When each campaign paused before was last resumed: the guard counts only sends after it."""
    rows = connection.execute(select(PAUSE.c.campaign, PAUSE.c.resumed_at).where(PAUSE.c.resumed_at.is_not(None)))
    return {row.campaign: row.resumed_at for row in rows}


def states(connection: Connection) -> dict[str, bool]:
    """Every campaign ever paused, and whether it is paused now."""
    return {
        row.campaign: row.paused
        for row in connection.execute(select(PAUSE.c.campaign, PAUSE.c.resumed_at.is_(None).label("paused")))
    }
