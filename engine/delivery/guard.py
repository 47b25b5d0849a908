"""The deliverability guard: a campaign that draws too many spam complaints or hard bounces is paused on
every daemon before it damages the sender's reputation, and the operator gets an email.

At each tick, for each campaign not paused, it reads the campaign's latest sends that went out (at most
`guard.window` of them, and only those sent after its last resume, so a resumed campaign starts a fresh
window) with the outcomes providers reported on them (engine/delivery/outcomes.py):
- complaints: sends marked `complained` (a spam report);
- hard bounces: sends marked `bounced` whose address is now suppressed for a bounce or as invalid, which
  is what a hard bounce, or a rejection of a bad address, leaves (engine/delivery/events.py); a soft
  bounce (a full mailbox, a block) suppresses nothing and does not count.
With at least `guard.min_sends` sends in the window, a rate above its limit pauses the campaign
(engine/delivery/pauses.py) with the figures as the reason. Complaints arrive hours or days after a
send, so the newest sends of the window count as not complained about yet: the rates are lower bounds.

The alert goes once per pause: it is claimed (`alerted_at`) in its own commit before it is handed to the
sender, as a send is; if the sender refuses it or raises, the claim is released and the next tick tries
again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from html import escape
from typing import Any

from sqlalchemy import and_, case, exists, func, select, update
from sqlalchemy.engine import Connection

from engine.config.settings import Config, Guard
from engine.delivery import pauses
from engine.delivery.outcomes import SEND, bit
from engine.delivery.pauses import PAUSE, Pause, PausedBy
from engine.delivery.statuses import SendStatus
from engine.mail.message import OutgoingEmail, build_email
from engine.mail.rendering import RenderedEmail, is_rtl
from engine.metrics import show_paused
from engine.senders import Sender
from engine.senders.base import ALERT_SEND_ID
from engine.store.dialect import unavailable
from engine.store.tables import Suppression, table_of

log = logging.getLogger("lifecycle.guard")
SUPPRESSION = table_of(Suppression)
# Suppression.reason of an address that bounced hard, or that a provider refused as invalid.
HARD_BOUNCE = ("bounce", "invalid")
ALERT_CAMPAIGN = "deliverability-guard"  # what the alert's X-Lifecycle-Campaign header says


@dataclass(frozen=True)
class Window:
    """A campaign's latest sends that went out, and how many drew a complaint or bounced hard."""

    sends: int
    complaints: int
    hard_bounces: int


@dataclass(frozen=True)
class Trip:
    """A rate of a window above its limit."""

    measure: str  # complaint or hard_bounce
    count: int
    sends: int
    limit: Decimal

    def as_figures(self) -> dict[str, Any]:
        """As stored with the pause (CampaignPause.figures), for the alert."""
        return {"measure": self.measure, "count": self.count, "sends": self.sends, "limit": str(self.limit)}

    @classmethod
    def of(cls, figures: dict[str, Any]) -> Trip:
        return cls(figures["measure"], figures["count"], figures["sends"], Decimal(figures["limit"]))

    @property
    def rate(self) -> Decimal:
        return Decimal(self.count) / self.sends

    @property
    def reason(self) -> str:
        """The pause's reason as stored and shown by `lifecycle report` and `tick`."""
        words = "complaint rate" if self.measure == "complaint" else "hard-bounce rate"
        return (
            f"{words} {percent(self.rate)} ({self.count} of the latest {self.sends} sends) "
            f"is above {percent(self.limit)}"
        )


def percent(rate: Decimal) -> str:
    """0.0045 as `0.45%`, 0.05 as `5%`."""
    return f"{rate * 100:.2f}".rstrip("0").rstrip(".") + "%"


def verdict(window: Window, guard: Guard) -> Trip | None:
    """Whether the window must pause its campaign, complaints first; never below `min_sends`."""
    if window.sends < guard.min_sends:
        return None
    for measure, count, limit in (
        ("complaint", window.complaints, guard.complaint_rate),
        ("hard_bounce", window.hard_bounces, guard.hard_bounce_rate),
    ):
        if count > limit * window.sends:  # exact: the limit is a Decimal, the counts integers
            return Trip(measure, count, window.sends, limit)
    return None


def measure(connection: Connection, campaign: str, size: int, since: datetime | None = None) -> Window:
    """The campaign's window: its latest `size` sends that went out (after `since`), newest first
    along `ix_send_campaign_sent`, counted in one statement."""
    latest = select(SEND.c.outcomes, SEND.c.to_email).where(
        SEND.c.campaign == campaign, SEND.c.status == SendStatus.SENT
    )
    if since is not None:
        latest = latest.where(SEND.c.sent_at > since)
    sends = latest.order_by(SEND.c.sent_at.desc()).limit(size).subquery()
    complained = sends.c.outcomes.op("&")(bit("complained")) != 0
    suppressed = exists(
        select(SUPPRESSION.c.email).where(
            SUPPRESSION.c.email == sends.c.to_email, SUPPRESSION.c.reason.in_(HARD_BOUNCE)
        )
    )
    hard = and_(sends.c.outcomes.op("&")(bit("bounced")) != 0, suppressed)
    row = connection.execute(
        select(func.count(), func.count(case((complained, 1))), func.count(case((hard, 1)))).select_from(sends)
    ).one()
    return Window(*row)


def check(connection: Connection, config: Config, campaigns: Sequence[str], now: datetime) -> list[Pause]:
    """Pause each campaign not paused yet whose window passes a limit; the pauses made."""
    held = pauses.active(connection)
    resumed = pauses.resumed_at(connection)
    made = []
    for name in campaigns:
        if name in held:
            continue
        trip = verdict(measure(connection, name, config.guard.window, resumed.get(name)), config.guard)
        if trip is not None and (
            pause := pauses.pause(connection, name, trip.reason, PausedBy.GUARD, now, trip.as_figures())
        ):
            log.warning("campaign paused by the deliverability guard", extra={"campaign": name, "reason": trip.reason})
            made.append(pause)
    return made


def alert(connection: Connection, config: Config, sender: Sender, now: datetime) -> int:
    """Email the operator about each guard pause not told yet; how many alerts went."""
    with connection.begin():
        rows = connection.execute(
            update(PAUSE)
            .where(PAUSE.c.paused_by == PausedBy.GUARD, PAUSE.c.resumed_at.is_(None), PAUSE.c.alerted_at.is_(None))
            .values(alerted_at=now)
            .returning(PAUSE.c.campaign, PAUSE.c.reason, PAUSE.c.paused_at, PAUSE.c.paused_by, PAUSE.c.figures)
        ).all()
    if not rows:
        return 0
    refused = []
    for row in rows:
        pause = Pause(*row[:4])
        error = _send_alert(sender, alert_email(config, pause, Trip.of(row.figures) if row.figures else None, now))
        if error is not None:
            log.warning(
                "the guard's alert email was not sent; the next tick tries again",
                extra={"campaign": pause.campaign, "error": error},
            )
            refused.append(pause)
    if refused:
        with connection.begin():
            for pause in refused:
                connection.execute(
                    update(PAUSE)
                    .where(PAUSE.c.campaign == pause.campaign, PAUSE.c.paused_at == pause.since)
                    .values(alerted_at=None)
                )
    return len(rows) - len(refused)


def _send_alert(sender: Sender, email: OutgoingEmail) -> str | None:
    """Hand one alert to the sender (alone: alerts share one send id); why it failed, or None. A sender
    that raises may or may not have sent it: the alert is tried again, as twice is better than never."""
    try:
        results = sender.send_batch([email])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if not results:
        return "the sender gave no result for it"
    return None if results[0].ok else results[0].error or "refused"


def run(
    connection: Connection, config: Config, campaigns: Sequence[str], sender: Sender, now: datetime, dry_run: bool
) -> dict[str, Pause]:
    """A tick's part: the guard (not in a dry run), then which campaigns are paused, for the tick and the
    `lifecycle_campaign_paused` gauge. A failure of the guard is logged and the tick goes on: the pauses
    already stored still hold."""
    if config.guard.enabled and not dry_run:
        try:
            with connection.begin():
                check(connection, config, campaigns, now)
            alert(connection, config, sender, now)
        except Exception as exc:
            if unavailable(exc):
                raise
            log.exception("the deliverability guard failed this tick")
    if dry_run:  # inside the dry run's own transaction
        held = pauses.active(connection)
    else:
        with connection.begin():
            held = pauses.active(connection)
    show_paused({name: name in held for name in campaigns})
    return {name: pause for name, pause in held.items() if name in campaigns}


# -- the alert email -------------------------------------------------------------------------------

TEXTS = {
    "en": {
        "subject": "Campaign {campaign} paused by the deliverability guard",
        "paused": "The deliverability guard paused the campaign {campaign} at {since}.",
        "complaint": "Its complaint rate is {rate} ({count} of its latest {sends} sends), above the limit of {limit}.",
        "hard_bounce": (
            "Its hard-bounce rate is {rate} ({count} of its latest {sends} sends), above the limit of {limit}."
        ),
        "held": "Its due emails are held, not lost, and new entries are still recorded.",
        "look": "See the campaign on the dashboard: {url}",
        "resume": "When the cause is fixed, resume it with: lifecycle resume {campaign}",
    },
    "ar": {
        "subject": "أوقف حارس التسليم الحملة {campaign}",
        "paused": "أوقف حارس التسليم إرسال الحملة {campaign} في {since}.",
        "complaint": "بلغ معدل الشكاوى {rate} ({count} من آخر {sends} رسالة)، وهو أعلى من الحد {limit}.",
        "hard_bounce": "بلغ معدل الارتداد الدائم {rate} ({count} من آخر {sends} رسالة)، وهو أعلى من الحد {limit}.",
        "held": "الرسائل المستحقة محفوظة ولن تضيع، وما زالت الاشتراكات الجديدة تُسجَّل.",
        "look": "راجع الحملة في لوحة المتابعة: {url}",
        "resume": "بعد إصلاح السبب، استأنف الإرسال بالأمر: lifecycle resume {campaign}",
    },
}


def alert_email(config: Config, pause: Pause, trip: Trip | None, now: datetime) -> OutgoingEmail:
    """The operator's alert about one guard pause, in the team's language (English for one it has no
    words for), with the figures and the dashboard's address."""
    locale = config.team.locale or config.default_locale
    texts = TEXTS.get(locale.split("-")[0].split("_")[0], TEXTS["en"])
    values = {
        "campaign": pause.campaign,
        "since": pause.since.strftime("%Y-%m-%d %H:%M UTC"),
        "url": f"{config.public_url.rstrip('/')}/dashboard",
    }
    figures = (
        texts[trip.measure].format(
            rate=percent(trip.rate), count=trip.count, sends=trip.sends, limit=percent(trip.limit)
        )
        if trip
        else pause.reason
    )
    lines = [texts["paused"].format(**values), figures, texts["held"]]
    lines += [texts["look"].format(**values), texts["resume"].format(**values)]
    direction = "rtl" if is_rtl(locale) else "ltr"
    html = (
        f'<!doctype html><html lang="{escape(locale)}" dir="{direction}"><body>'
        + "".join(f"<p>{escape(line)}</p>" for line in lines)
        + "</body></html>"
    )
    rendered = RenderedEmail(subject=texts["subject"].format(**values), html=html, text="\n\n".join(lines) + "\n")
    return build_email(
        config,
        send_id=ALERT_SEND_ID,
        campaign=ALERT_CAMPAIGN,
        marketing=False,
        to=config.guard.alert_to or config.from_.email,
        to_name=None,
        rendered=rendered,
        unsubscribe_url=None,
        now=now,
    )
