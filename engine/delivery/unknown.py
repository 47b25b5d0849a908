"""Sends whose outcome is unknown (their worker stopped mid-send), and how an operator settles
them: as `sent`, when the provider's logs or events show they went out, or by sending them again,
which is recorded on the send (`resent_at`), never silent. The engine itself never guesses."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy.engine import Engine

from engine.campaigns.language import Campaign
from engine.delivery import ledger
from engine.delivery.ledger import UnknownSend
from engine.errors import NotFound


class Resolution(StrEnum):
    SENT = "sent"
    RESEND = "resend"


def settle(
    engine: Engine, campaigns: list[Campaign], campaign: str | None, resolution: Resolution | None, now: datetime
) -> list[UnknownSend]:
    """The unknown sends of `campaign` (or all), settled as `resolution` when one is given, in one
    transaction; returns them as they were before."""
    by_name = {c.name: c for c in campaigns}
    if campaign is not None and campaign not in by_name:
        raise NotFound(f"no campaign named '{campaign}' (known: {', '.join(sorted(by_name)) or 'none'})")
    with engine.begin() as connection:
        sends = ledger.unknown_sends(connection, campaign)
        if resolution is Resolution.RESEND:
            ledger.resend(connection, sends, now)
        elif resolution is Resolution.SENT:
            for name in sorted({send.campaign for send in sends}):
                if name not in by_name:
                    raise NotFound(
                        f"campaign '{name}' is no longer in campaigns/: restore its file to settle its sends"
                    )
                ledger.settle_as_sent(connection, by_name[name], [s for s in sends if s.campaign == name])
    return sends
