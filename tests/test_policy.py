"""The send-time policy from a table of cases: each reason, the order in which they win, what
transactional mail ignores, a customer's own frequency, and when a deferred send may go (across
timezones and midnight). `decide` is pure, so no database is needed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.campaigns.language import Campaign
from engine.config.settings import Cap, TimeWindow
from engine.delivery.ledger import DueSend
from engine.delivery.policy import SEND, Action, Decision, Rules, caps, decide, lookback, next_local
from engine.delivery.statuses import DeferReason, SkipReason

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # a Tuesday; New York is on summer time (UTC-4) since 8 March
DAY = timedelta(days=1)

SEND_ME = DueSend(
    id=1,
    step=1,
    due_at=NOW,
    variant=None,
    attempts=0,
    entry_id=1,
    entered_at=NOW - DAY,
    event_id=None,
    customer_id=1,
    external_id="c1",
    email="c1@example.com",
    first_name="Ann",
    last_name=None,
    locale=None,
    timezone=None,
    created_at=NOW - 30 * DAY,
    confirmed_at=NOW - 30 * DAY,
    unsubscribed_at=None,
    frequency=None,
    attributes={},
    suppressed=False,
    in_audience=True,
    exited=False,
    subscribed=True,
)


def campaign(kind: str = "marketing", window: tuple[str, str] | None = None) -> Campaign:
    spec: dict[str, Any] = {
        "name": "promo",
        "type": kind,
        "topic": "offers" if kind == "marketing" else None,
        "trigger": {"event": "signup"},
        "steps": [{"template": "promo", "subject": "Hello"}],
    }
    if window:
        spec["send_window"] = {"start": window[0], "end": window[1]}
    return Campaign.model_validate(spec)


def quiet(start: str, end: str) -> TimeWindow:
    return TimeWindow.model_validate({"start": start, "end": end})


def cap(most: int, per: str) -> Cap:
    return Cap.model_validate({"max": most, "per": per})


def skip(reason: SkipReason) -> Decision:
    return Decision(Action.SKIP, reason)


def defer(reason: DeferReason, until: datetime) -> Decision:
    return Decision(Action.DEFER, reason, until)


OPT_IN = Rules(double_opt_in=True)
QUIET = Rules(quiet_hours=quiet("21:00", "08:00"))  # wraps past midnight
CAPPED = Rules(marketing_cap=cap(2, "7d"))
UNSUBSCRIBED = {"unsubscribed_at": NOW - DAY}
TOKYO_21H = {"timezone": "Asia/Tokyo"}  # NOW is 21:00 in Tokyo
NEW_YORK_8H = {"timezone": "America/New_York"}  # NOW is 08:00 in New York
BUSINESS_HOURS = ("09:00", "17:00")

CASES = [
    # (id, changes to the send, campaign, rules, sent recently, decision)
    ("nothing in the way", {}, campaign(), Rules(), [], SEND),
    # each reason to skip, and the one before it winning over it
    ("exit", {"exited": True}, campaign(), Rules(), [], skip(SkipReason.EXIT)),
    ("suppressed", {"suppressed": True}, campaign(), Rules(), [], skip(SkipReason.SUPPRESSED)),
    ("exit beats suppressed", {"exited": True, "suppressed": True}, campaign(), Rules(), [], skip(SkipReason.EXIT)),
    ("unsubscribed from everything", UNSUBSCRIBED, campaign(), Rules(), [], skip(SkipReason.UNSUBSCRIBED)),
    ("unsubscribed from the topic", {"subscribed": False}, campaign(), Rules(), [], skip(SkipReason.UNSUBSCRIBED)),
    (
        "suppressed beats unsubscribed",
        {"suppressed": True, **UNSUBSCRIBED},
        campaign(),
        Rules(),
        [],
        skip(SkipReason.SUPPRESSED),
    ),
    ("not confirmed", {"confirmed_at": None}, campaign(), OPT_IN, [], skip(SkipReason.NOT_CONFIRMED)),
    ("confirmation not required", {"confirmed_at": None}, campaign(), Rules(), [], SEND),
    (
        "unsubscribed beats not confirmed",
        {"confirmed_at": None, "subscribed": False},
        campaign(),
        OPT_IN,
        [],
        skip(SkipReason.UNSUBSCRIBED),
    ),
    ("audience", {"in_audience": False}, campaign(), Rules(), [], skip(SkipReason.AUDIENCE)),
    (
        "not confirmed beats audience",
        {"confirmed_at": None, "in_audience": False},
        campaign(),
        OPT_IN,
        [],
        skip(SkipReason.NOT_CONFIRMED),
    ),
    # each reason to defer, until when, and the one before it winning over it
    (
        "audience beats the send window",
        {"in_audience": False},
        campaign(window=("09:00", "11:00")),
        Rules(),
        [],
        skip(SkipReason.AUDIENCE),
    ),
    (
        "send window: later today on the customer's clock",
        NEW_YORK_8H,
        campaign(window=BUSINESS_HOURS),
        Rules(),
        [],
        defer(DeferReason.SEND_WINDOW, datetime(2026, 3, 10, 13, 0, tzinfo=UTC)),
    ),
    (
        "send window: tomorrow, in config's timezone",
        {},
        campaign(window=("09:00", "11:00")),
        Rules(timezone="Europe/Berlin"),  # 13:00 there
        [],
        defer(DeferReason.SEND_WINDOW, datetime(2026, 3, 11, 8, 0, tzinfo=UTC)),
    ),
    (
        "send window past midnight: opens later tonight",
        TOKYO_21H,
        campaign(window=("22:00", "06:00")),
        Rules(),
        [],
        defer(DeferReason.SEND_WINDOW, datetime(2026, 3, 10, 13, 0, tzinfo=UTC)),
    ),
    (
        "inside a send window past midnight",
        {"timezone": "Asia/Tokyo"},
        campaign(window=("20:00", "06:00")),
        Rules(),
        [],
        SEND,
    ),
    (
        "quiet hours: until they end tomorrow morning",
        TOKYO_21H,
        campaign(),
        QUIET,
        [],
        defer(DeferReason.QUIET_HOURS, datetime(2026, 3, 10, 23, 0, tzinfo=UTC)),
    ),
    ("outside quiet hours", NEW_YORK_8H, campaign(), QUIET, [], SEND),
    (
        "send window beats quiet hours",
        TOKYO_21H,
        campaign(window=("22:00", "06:00")),
        QUIET,
        [],
        defer(DeferReason.SEND_WINDOW, datetime(2026, 3, 10, 13, 0, tzinfo=UTC)),
    ),
    (
        "frequency cap: until the oldest counted send is a period old",
        {},
        campaign(),
        CAPPED,
        [NOW - 6 * DAY, NOW - DAY, NOW - 3 * DAY],
        defer(DeferReason.FREQUENCY_CAP, NOW + 4 * DAY),
    ),
    ("under the frequency cap", {}, campaign(), CAPPED, [NOW - DAY], SEND),
    ("sends older than the period do not count", {}, campaign(), CAPPED, [NOW - 8 * DAY, NOW - DAY], SEND),
    (
        "quiet hours beat the frequency cap",
        TOKYO_21H,
        campaign(),
        replace(QUIET, marketing_cap=cap(1, "7d")),
        [NOW - DAY],
        defer(DeferReason.QUIET_HOURS, datetime(2026, 3, 10, 23, 0, tzinfo=UTC)),
    ),
    # a customer's own choice of frequency, lower than the cap
    (
        "weekly",
        {"frequency": "weekly"},
        campaign(),
        Rules(),
        [NOW - 2 * DAY],
        defer(DeferReason.FREQUENCY_CAP, NOW + 5 * DAY),
    ),
    (
        "monthly",
        {"frequency": "monthly"},
        campaign(),
        Rules(),
        [NOW - 20 * DAY],
        defer(DeferReason.FREQUENCY_CAP, NOW + 10 * DAY),
    ),
    ("monthly, the last a month ago", {"frequency": "monthly"}, campaign(), Rules(), [NOW - 31 * DAY], SEND),
    (
        "config's cap is checked before the customer's own",
        {"frequency": "weekly"},
        campaign(),
        Rules(marketing_cap=cap(1, "1d")),
        [NOW - timedelta(hours=2)],
        defer(DeferReason.FREQUENCY_CAP, NOW + timedelta(hours=22)),
    ),
    (
        "the customer's own cap when config's allows",
        {"frequency": "weekly"},
        campaign(),
        Rules(marketing_cap=cap(1, "1d")),
        [NOW - 2 * DAY],
        defer(DeferReason.FREQUENCY_CAP, NOW + 5 * DAY),
    ),
    # transactional mail asks no consent and knows no quiet hours or caps
    (
        "transactional: unsubscribed, unconfirmed",
        {**UNSUBSCRIBED, "subscribed": False, "confirmed_at": None},
        campaign("transactional"),
        OPT_IN,
        [],
        SEND,
    ),
    ("transactional: quiet hours", TOKYO_21H, campaign("transactional"), QUIET, [], SEND),
    (
        "transactional: over every cap",
        {"frequency": "weekly"},
        campaign("transactional"),
        CAPPED,
        [NOW - DAY, NOW - 2 * DAY],
        SEND,
    ),
    (
        "transactional: suppressed",
        {"suppressed": True},
        campaign("transactional"),
        Rules(),
        [],
        skip(SkipReason.SUPPRESSED),
    ),
    ("transactional: exit", {"exited": True}, campaign("transactional"), Rules(), [], skip(SkipReason.EXIT)),
    (
        "transactional: audience",
        {"in_audience": False},
        campaign("transactional"),
        Rules(),
        [],
        skip(SkipReason.AUDIENCE),
    ),
    (
        "transactional: send window",
        NEW_YORK_8H,
        campaign("transactional", window=BUSINESS_HOURS),
        Rules(),
        [],
        defer(DeferReason.SEND_WINDOW, datetime(2026, 3, 10, 13, 0, tzinfo=UTC)),
    ),
]


@pytest.mark.parametrize(
    ("changes", "spec", "rules", "sent", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(
    changes: dict[str, Any], spec: Campaign, rules: Rules, sent: list[datetime], expected: Decision
) -> None:
    assert decide(SEND_ME._replace(**changes), spec, rules, NOW, sent) == expected


@pytest.mark.parametrize(
    ("local", "start", "expected"),
    [
        (
            datetime(2026, 3, 10, 8, 0, tzinfo=ZoneInfo("America/New_York")),
            time(9),
            datetime(2026, 3, 10, 13, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 10, 9, 0, tzinfo=ZoneInfo("America/New_York")),
            time(9),
            datetime(2026, 3, 11, 13, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 10, 23, 30, tzinfo=ZoneInfo("Asia/Tokyo")),
            time(8, 15),
            datetime(2026, 3, 10, 23, 15, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 7, 10, 0, tzinfo=ZoneInfo("America/New_York")),
            time(9),
            datetime(2026, 3, 8, 13, 0, tzinfo=UTC),
        ),
    ],
    ids=["later today", "now is not next: tomorrow", "tomorrow there, today in UTC", "into summer time"],
)
def test_next_local(local: datetime, start: time, expected: datetime) -> None:
    assert next_local(local, start) == expected


def test_caps_and_how_far_back_they_look() -> None:
    rules = Rules(marketing_cap=cap(3, "45d"))
    assert caps(rules, "weekly") == [(3, timedelta(days=45)), (1, timedelta(days=7))]
    assert caps(rules, None) == [(3, timedelta(days=45))]
    assert caps(Rules(), "daily-ish") == []
    assert lookback(rules) == timedelta(days=45)
    assert lookback(Rules()) == timedelta(days=30)  # the monthly choice
