"""The send-time policy: whether a due send goes now, waits, or never goes, and why (campaigns.md
"Who gets nothing, and why"). A pure function of the send, its campaign, the rules of config, the
time and when the customer was last sent marketing: no database, so every rule and their order
can be read here and tested from a table of cases (tests/test_policy.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from engine.campaigns.language import Campaign
from engine.config.settings import Cap, Config, TimeWindow
from engine.customers.preferences import FREQUENCY_CHOICES
from engine.delivery.ledger import DueSend
from engine.delivery.statuses import DeferReason, SkipReason


class Check(StrEnum):
    """The send-time rules, in the order `decide` applies them."""

    EXIT = "exit"
    SUPPRESSED = "suppressed"
    TOPIC = "topic"
    CONFIRMED = "confirmed"
    AUDIENCE = "audience"
    SEND_WINDOW = "send_window"
    QUIET_HOURS = "quiet_hours"
    FREQUENCY_CAP = "frequency_cap"


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
SKIP = {reason: Decision(Action.SKIP, reason) for reason in SkipReason}


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
    return next((d for _, d in checks(send, campaign, rules, now, sent_recently) if d is not None), SEND)


def checks(
    send: DueSend, campaign: Campaign, rules: Rules, now: datetime, sent_recently: Sequence[datetime]
) -> Iterator[tuple[Check, Decision | None]]:
    """Each rule that applies to the campaign, in `decide`'s order, with what it decides (None: it
    lets the send through). Lazy, so `decide` stops at the first that holds the send back, and
    `lifecycle why` can show every one."""
    marketing = campaign.marketing
    yield Check.EXIT, SKIP[SkipReason.EXIT] if send.exited else None
    yield Check.SUPPRESSED, SKIP[SkipReason.SUPPRESSED] if send.suppressed else None
    if marketing:
        unsubscribed = send.unsubscribed_at is not None or not send.subscribed
        yield Check.TOPIC, SKIP[SkipReason.UNSUBSCRIBED] if unsubscribed else None
        if rules.double_opt_in:
            yield Check.CONFIRMED, SKIP[SkipReason.NOT_CONFIRMED] if send.confirmed_at is None else None
    yield Check.AUDIENCE, None if send.in_audience else SKIP[SkipReason.AUDIENCE]
    local = local_time(send, rules, now)
    window = campaign.send_window
    if window:
        closed = not window.contains(local.time())
        yield Check.SEND_WINDOW, _defer(DeferReason.SEND_WINDOW, next_local(local, window.start)) if closed else None
    quiet = rules.quiet_hours
    if marketing and quiet:
        inside = quiet.contains(local.time())
        yield Check.QUIET_HOURS, _defer(DeferReason.QUIET_HOURS, next_local(local, quiet.end)) if inside else None
    if marketing:
        yield Check.FREQUENCY_CAP, _capped(rules, send.frequency, now, sent_recently)


def _defer(reason: DeferReason, until: datetime) -> Decision:
    return Decision(Action.DEFER, reason, until)


def _capped(rules: Rules, frequency: str | None, now: datetime, sent_recently: Sequence[datetime]) -> Decision | None:
    """Deferred until the oldest send that counts falls out of a cap, if one is reached."""
    for limit, per in caps(rules, frequency):
        within = sorted(t for t in sent_recently if t > now - per)
        if len(within) >= limit:
            return _defer(DeferReason.FREQUENCY_CAP, within[len(within) - limit] + per)
    return None


def local_time(send: DueSend, rules: Rules, now: datetime) -> datetime:
    """`now` on the recipient's clock: their timezone, else config's."""
    return now.astimezone(ZoneInfo(send.timezone or rules.timezone))


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
