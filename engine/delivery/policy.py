"""The send-time policy: whether a due send goes now, waits, or never goes, and why (campaigns.md
"Who gets nothing, and why"). A pure function of the send, its campaign, the rules of config, the
time and when the customer was last sent marketing: no database, so every rule and their order
can be read here and tested from a table of cases (tests/test_policy.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from engine.campaigns.language import Campaign
from engine.config.settings import Cap, Config, TimeWindow
from engine.customers.preferences import FREQUENCY_CHOICES
from engine.delivery.ledger import DueSend
from engine.delivery.statuses import DeferReason, SkipReason


class Action(StrEnum):
    SEND = "send"
    SKIP = "skip"  # never: the send is skipped and its entry ends
    DEFER = "defer"  # not now: the send waits until `Decision.until`


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: SkipReason | DeferReason | None = None
    until: datetime | None = None


SEND = Decision(Action.SEND)


@dataclass(frozen=True)
class Rules:
    """What config says about sending: the default timezone, double opt-in, quiet hours and the
    marketing cap."""

    timezone: str = "UTC"
    double_opt_in: bool = False
    quiet_hours: TimeWindow | None = None
    marketing_cap: Cap | None = None

    @classmethod
    def of(cls, config: Config) -> Rules:
        return cls(config.timezone, config.double_opt_in, config.quiet_hours, config.limits.marketing)


def decide(
    send: DueSend, campaign: Campaign, rules: Rules, now: datetime, sent_recently: Sequence[datetime]
) -> Decision:
    """The first reason that applies wins: exit, suppressed, unsubscribed, not confirmed, audience
    (skip), then send window, quiet hours, frequency cap (defer). Transactional mail asks no consent
    and knows no quiet hours or caps. `sent_recently`: when the customer was sent marketing."""
    marketing = campaign.marketing
    if send.exited:
        return Decision(Action.SKIP, SkipReason.EXIT)
    if send.suppressed:
        return Decision(Action.SKIP, SkipReason.SUPPRESSED)
    if marketing and (send.unsubscribed_at is not None or not send.subscribed):
        return Decision(Action.SKIP, SkipReason.UNSUBSCRIBED)
    if marketing and rules.double_opt_in and send.confirmed_at is None:
        return Decision(Action.SKIP, SkipReason.NOT_CONFIRMED)
    if not send.in_audience:
        return Decision(Action.SKIP, SkipReason.AUDIENCE)
    local = now.astimezone(ZoneInfo(send.timezone or rules.timezone))
    window = campaign.send_window
    if window and not window.contains(local.time()):
        return Decision(Action.DEFER, DeferReason.SEND_WINDOW, next_local(local, window.start))
    quiet = rules.quiet_hours
    if marketing and quiet and quiet.contains(local.time()):
        return Decision(Action.DEFER, DeferReason.QUIET_HOURS, next_local(local, quiet.end))
    if marketing:
        for limit, per in caps(rules, send.frequency):
            within = sorted(t for t in sent_recently if t > now - per)
            if len(within) >= limit:
                return Decision(Action.DEFER, DeferReason.FREQUENCY_CAP, within[len(within) - limit] + per)
    return SEND


def caps(rules: Rules, frequency: str | None) -> list[tuple[int, timedelta]]:
    """(at most, per): the marketing cap of config, and the lower one a customer chose for themselves."""
    found = []
    if rules.marketing_cap:
        found.append((rules.marketing_cap.max, rules.marketing_cap.per))
    chosen = FREQUENCY_CHOICES.get(frequency) if frequency else None
    if chosen:
        found.append((1, chosen))
    return found


def lookback(rules: Rules) -> timedelta:
    """How far back the caps of any customer look: how much sending history `decide` needs."""
    return max([per for _, per in caps(rules, None)] + list(FREQUENCY_CHOICES.values()))


def next_local(local: datetime, start: time) -> datetime:
    """The next time the recipient's clock shows `start`, as UTC."""
    candidate = local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate = (local + timedelta(days=1)).replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    return candidate.astimezone(ZoneInfo("UTC"))
