"""What works: campaign figures, holdout lift, retention (CRR), stages and churn risk, counted in the
database. This is the one query layer behind `lifecycle report` (table, JSON, HTML) and `GET /dashboard`,
so the numbers agree everywhere (../shared/spec/README.md "Measures", interfaces.md `lifecycle report`).

Every figure is a GROUP BY or a conditional count in SQL: Python only folds the few grouped rows
into the report's dict, so the cost does not grow with the number of sends on the Python side.

Choices where the contract is silent:
- `--since` keeps the entries that entered at or after it, with their sends and deliveries, in the
  campaign figures and the monthly activity alike. Retention, stages and risk describe the customers
  as of `now` and ignore it.
- Outcomes count distinct sends: a send opened three times is one `opened`. `bounced` is a bounce or a
  drop, `complained` a spam report.
- A campaign without a `goal` has `converted` 0, `goal` null and no lift.
- Rates are percentages; the lift's `difference` is in percentage points.
- A customer's value (for the red list) is the sum of the `total` property of their `purchase` events.
- Months are calendar months in the config timezone; a customer created at a month's first instant
  is new in that month, and the current month ends at `now`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any, Callable
from zoneinfo import ZoneInfo

import numpy
from sqlalchemy import and_, case, exists, func, literal, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement, Select
from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

from .campaigns import RISKS, STAGES, Campaign, Goal
from .config import Config
from .durations import format_duration
from .errors import NotFound
from .measures import PURCHASE, Measures
from .sqltime import shifted
from .store import Customer, Delivery, Entry, Event, Send

# Provider events (Delivery.kind) behind each outcome of a send.
OUTCOME_KINDS = {
    "delivered": ("delivered",),
    "opened": ("open",),
    "clicked": ("click",),
    "bounced": ("bounce", "dropped"),
    "complained": ("spamreport",),
    "unsubscribed": ("unsubscribe",),
}
OUTCOMES = tuple(OUTCOME_KINDS)
PROVIDER_KINDS = [kind for kinds in OUTCOME_KINDS.values() for kind in kinds]
# Send statuses are reported as they are, except scheduled, deferred and sending: still `waiting`.
WAITING_STATUSES = ("scheduled", "deferred", "sending")
SEND_FIGURES = ("sent", *OUTCOMES, "failed", "unknown", "expired", "held_out", "waiting")
RED_LISTED = 25
MONTHS = 12
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Scope:
    """What the report covers: the moment it describes and the optional filters."""

    now: datetime
    since: datetime | None = None
    campaign: str | None = None


def build_report(engine: Engine, config: Config, campaigns: list[Campaign], now: datetime,
                 since: datetime | None = None, campaign: str | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The whole report as plain data in the JSON shape of interfaces.md, plus `activity`,
    `red_customers` and each campaign's `goal`."""
    advance = progress or (lambda n: None)
    scope = Scope(now, since, campaign)
    months = month_starts(now, config.timezone)
    measures = Measures(config, now)
    with engine.connect() as connection:
        figures = campaign_figures(connection, scope, {c.name: c for c in campaigns}, advance)
        report = {
            "now": now.isoformat(),
            "since": since.isoformat() if since else None,
            "campaigns": figures,
            "activity": activity(connection, scope, months, config.timezone),
            "retention": retention(connection, config, measures, months),
            **stage_and_risk_counts(connection, measures),
            "red_customers": red_customers(connection, measures),
        }
    advance(1)
    return report


# -- campaigns -------------------------------------------------------------------------------------


def campaign_figures(connection: Connection, scope: Scope, campaigns: dict[str, Campaign],
                     advance: Callable[[int], None]) -> dict[str, dict]:
    """Per campaign: entries, send statuses, outcomes and conversions, with a row per step and variant."""
    entries = _entry_counts(connection, scope)
    names = sorted(set(campaigns) | set(entries))
    if scope.campaign is not None:
        if scope.campaign not in names:
            raise NotFound(f"no campaign named '{scope.campaign}' (known: {', '.join(names) or 'none'})")
        names = [scope.campaign]
    steps = _step_rows(connection, scope)
    result = {}
    for name in names:
        spec = campaigns.get(name)
        goal = spec.goal if spec else None
        rows = steps.get(name, {})
        if goal is not None:
            for (step, variant), converted in _send_conversions(connection, scope, name, goal).items():
                rows.setdefault((step, variant), _empty_step(step, variant))["converted"] = converted
        groups = _entry_conversions(connection, scope, name, goal) if goal is not None else {}
        result[name] = _campaign(entries.get(name, (0, 0)), rows, goal, groups,
                                 holdout=bool(spec and spec.holdout))
        advance(1)
    return result


def _campaign(entered_held: tuple[int, int], rows: dict[tuple, dict], goal: Goal | None,
              groups: dict[bool, tuple[int, int]], holdout: bool) -> dict[str, Any]:
    """One campaign's figures: its step rows summed, its entries, conversions and lift."""
    entered, held_out = entered_held
    step_rows = [rows[key] for key in sorted(rows, key=lambda k: (k[0], k[1] or ""))]
    totals = {figure: sum(r[figure] for r in step_rows) for figure in SEND_FIGURES}
    skipped: dict[str, int] = {}
    for row in step_rows:
        for reason, n in row["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
    return {
        "goal": f"{goal.event} within {format_duration(goal.within)}" if goal else None,
        "entered": entered,
        **totals,
        "held_out": held_out,
        "converted": sum(converted for _, converted in groups.values()),
        "skipped": dict(sorted(skipped.items())),
        "steps": step_rows,
        "lift": lift(groups.get(False, (0, 0)), groups.get(True, (0, 0))) if holdout and goal else None,
    }


def _empty_step(step: int, variant: str | None) -> dict[str, Any]:
    return {"step": step, "variant": variant, **{figure: 0 for figure in SEND_FIGURES}, "skipped": {},
            "converted": 0}


def _entries(query: Select, scope: Scope) -> Select:
    """Entries in scope: the campaign asked for and those entered since `--since`."""
    if scope.campaign is not None:
        query = query.where(Entry.campaign == scope.campaign)
    if scope.since is not None:
        query = query.where(Entry.entered_at >= scope.since)
    return query


def _sends(query: Select, scope: Scope) -> Select:
    """Sends in scope: those of the entries in scope (the join only when `--since` needs it)."""
    if scope.campaign is not None:
        query = query.where(Send.campaign == scope.campaign)
    if scope.since is not None:
        query = query.join(Entry, Entry.id == Send.entry_id).where(Entry.entered_at >= scope.since)
    return query


def _entry_counts(connection: Connection, scope: Scope) -> dict[str, tuple[int, int]]:
    """(entered, held out) per campaign."""
    query = _entries(select(Entry.campaign, func.count(), func.count(case((Entry.held_out, 1))))
                     .group_by(Entry.campaign), scope)
    return {name: (entered, held) for name, entered, held in connection.execute(query)}


def _step_rows(connection: Connection, scope: Scope) -> dict[str, dict[tuple, dict]]:
    """Per campaign, a row per (step, variant) with send statuses, skip reasons and outcomes."""
    rows: dict[str, dict[tuple, dict]] = {}

    def row(name: str, step: int, variant: str | None) -> dict:
        return rows.setdefault(name, {}).setdefault((step, variant), _empty_step(step, variant))

    status = case((Send.status.in_(WAITING_STATUSES), "waiting"), else_=Send.status)
    reason = case((Send.status == "skipped", func.coalesce(Send.reason, "unknown")))
    statuses = _sends(select(Send.campaign, Send.step, Send.variant, status, reason, func.count())
                      .select_from(Send).group_by(Send.campaign, Send.step, Send.variant, status, reason), scope)
    for name, step, variant, state, why, n in connection.execute(statuses):
        target = row(name, step, variant)
        if state == "skipped":
            target["skipped"][why] = target["skipped"].get(why, 0) + n
        elif state in target:
            target[state] += n
    outcome = _outcome()
    outcomes = _sends(select(Send.campaign, Send.step, Send.variant, outcome, func.count(func.distinct(Delivery.send_id)))
                      .select_from(Delivery).join(Send, Send.id == Delivery.send_id)
                      .where(Delivery.kind.in_(PROVIDER_KINDS))
                      .group_by(Send.campaign, Send.step, Send.variant, outcome), scope)
    for name, step, variant, kind, n in connection.execute(outcomes):
        row(name, step, variant)[kind] = n
    for by_step in rows.values():
        for target in by_step.values():
            target["skipped"] = dict(sorted(target["skipped"].items()))
    return rows


def _outcome() -> ColumnElement:
    """The outcome a provider event stands for (`bounce` and `dropped` are both `bounced`)."""
    return case(*((Delivery.kind.in_(kinds), name) for name, kinds in OUTCOME_KINDS.items()))


def _goal_reached(goal: Goal, customer_id, after, now: datetime) -> ColumnElement:
    """The customer did the goal event after `after` and within the goal's window, by `now`."""
    return exists(select(Event.id).where(Event.customer_id == customer_id, Event.name == goal.event,
                                         Event.at > after, Event.at <= shifted(after, goal.within),
                                         Event.at <= now))


def _entry_conversions(connection: Connection, scope: Scope, name: str, goal: Goal) -> dict[bool, tuple[int, int]]:
    """(entries, converted) for held-out entries (True) and entries that got a send (False)."""
    got_send = exists(select(Send.id).where(Send.entry_id == Entry.id, Send.status == "sent"))
    converted = _goal_reached(goal, Entry.customer_id, Entry.entered_at, scope.now)
    query = _entries(select(Entry.held_out, func.count(), func.count(case((converted, 1))))
                     .where(Entry.campaign == name, or_(Entry.held_out, got_send))
                     .group_by(Entry.held_out), scope)
    return {bool(held): (n, c) for held, n, c in connection.execute(query)}


def _send_conversions(connection: Connection, scope: Scope, name: str, goal: Goal) -> dict[tuple, int]:
    """Per (step, variant), the sent sends whose customer reached the goal within its window after the send."""
    converted = _goal_reached(goal, Send.customer_id, Send.sent_at, scope.now)
    query = _sends(select(Send.step, Send.variant, func.count(case((converted, 1))))
                   .select_from(Send).where(Send.campaign == name, Send.status == "sent")
                   .group_by(Send.step, Send.variant), scope)
    return {(step, variant): n for step, variant, n in connection.execute(query)}


def lift(treated: tuple[int, int], held_out: tuple[int, int]) -> dict[str, Any]:
    """The conversion rate of entries that got the campaign against the held-out ones.

    The 95% confidence interval of the difference is Newcombe's hybrid score interval and the p-value
    the Agresti-Caffo test, both from statsmodels (`confint_proportions_2indep`,
    `test_proportions_2indep`); they stay sensible for small groups and zero conversions. With an
    empty group there is nothing to compare, and the interval and p-value are null.
    """
    (n_t, c_t), (n_h, c_h) = treated, held_out
    rate_t, rate_h = _rate(c_t, n_t), _rate(c_h, n_h)
    result = {
        "treated": {"entries": n_t, "converted": c_t, "rate": rate_t},
        "held_out": {"entries": n_h, "converted": c_h, "rate": rate_h},
        "difference": None, "ci_low": None, "ci_high": None, "relative": None, "p_value": None,
        "confidence": CONFIDENCE,
    }
    if not (n_t and n_h):
        return result
    with numpy.errstate(all="ignore"):
        low, high = confint_proportions_2indep(c_t, n_t, c_h, n_h, compare="diff", alpha=1 - CONFIDENCE)
        p_value = test_proportions_2indep(c_t, n_t, c_h, n_h, compare="diff").pvalue
    share_t, share_h = c_t / n_t, c_h / n_h
    result.update(difference=round(100 * (share_t - share_h), 2), ci_low=round(100 * float(low), 2),
                  ci_high=round(100 * float(high), 2), p_value=_number(p_value, 4),
                  relative=round(100 * (share_t - share_h) / share_h, 2) if share_h else None)
    return result


def _rate(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def _number(value: Any, digits: int) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


# -- over time -------------------------------------------------------------------------------------


def month_starts(now: datetime, timezone: str) -> list[datetime]:
    """The first instants of the last 12 calendar months (the month of `now` last) and of the next
    month, in the config timezone, as UTC instants."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    index = local.year * 12 + local.month - 1
    firsts = [datetime(i // 12, i % 12 + 1, 1, tzinfo=zone) for i in range(index - MONTHS + 1, index + 2)]
    return [first.astimezone(now.tzinfo) for first in firsts]


def _label(start: datetime, timezone: str) -> str:
    return start.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def _month_of(column, months: list[datetime]) -> ColumnElement:
    """The index of the month a time falls in (null outside the 12 months), one CASE in SQL."""
    return case(*((and_(column >= start, column < end), i) for i, (start, end) in enumerate(pairwise(months))))


def activity(connection: Connection, scope: Scope, months: list[datetime], timezone: str) -> list[dict[str, Any]]:
    """Sends that went out and their outcomes, per month of the last 12 (for the dashboard's chart)."""
    series = [{"month": _label(start, timezone), "sent": 0, **{o: 0 for o in OUTCOMES}} for start in months[:-1]]
    sent_month = _month_of(Send.sent_at, months)
    sent = _sends(select(sent_month, func.count()).select_from(Send)
                  .where(Send.status == "sent", Send.sent_at >= months[0]).group_by(sent_month), scope)
    outcome = _outcome()
    at_month = _month_of(Delivery.at, months)
    outcomes = _sends(select(at_month, outcome, func.count(func.distinct(Delivery.send_id)))
                      .select_from(Delivery).join(Send, Send.id == Delivery.send_id)
                      .where(Delivery.at >= months[0], Delivery.kind.in_(PROVIDER_KINDS))
                      .group_by(at_month, outcome), scope)
    for index, n in connection.execute(sent):
        if index is not None:
            series[index]["sent"] = n
    for index, kind, n in connection.execute(outcomes):
        if index is not None:
            series[index][kind] = n
    return series


# -- customers -------------------------------------------------------------------------------------


def retention(connection: Connection, config: Config, measures: Measures, months: list[datetime]) -> list[dict]:
    """CRR = ((E − N) / S) × 100 for each of the last 12 months, oldest first.

    A customer counts from `created_at` until they become lost (last activity + stages.lost.inactive_for,
    last activity as of `now`): one interval per customer, so S and E are the customers whose interval
    holds the month's first instant and its end, and N those created in between. All 13 boundaries are
    counted in one pass over the customers.
    """
    now = measures.now
    bounds = [*months[:-1], min(months[-1], now)]
    life = select(Customer.created_at.label("born"),
                  shifted(measures.last_activity(), config.stages.lost.inactive_for).label("lost_at")
                  ).where(Customer.created_at <= now).subquery()
    counted = [func.count(case((and_(life.c.born < t, life.c.lost_at > t), 1))) for t in bounds]
    created = [func.count(case((and_(life.c.born >= a, life.c.born < b), 1))) for a, b in pairwise(bounds)]
    values = connection.execute(select(*counted, *created)).one()
    alive, new = values[:len(bounds)], values[len(bounds):]
    return [{"month": _label(start, config.timezone), "start": alive[i], "end": alive[i + 1], "new": new[i],
             "crr": round(100 * (alive[i + 1] - new[i]) / alive[i], 2) if alive[i] else None}
            for i, start in enumerate(months[:-1])]


def stage_and_risk_counts(connection: Connection, measures: Measures) -> dict[str, dict[str, int]]:
    """How many customers are in each lifecycle stage and churn-risk colour, in one pass."""
    columns = ([func.count(case((measures.stage(s), 1))) for s in STAGES]
               + [func.count(case((measures.risk(r), 1))) for r in RISKS])
    values = connection.execute(select(*columns).select_from(Customer)
                                .where(Customer.created_at <= measures.now)).one()
    return {"stages": dict(zip(STAGES, values[:len(STAGES)])), "risk": dict(zip(RISKS, values[len(STAGES):]))}


def customer_value(measures: Measures) -> ColumnElement:
    """The sum of the `total` property of the customer's purchases so far."""
    return (select(func.coalesce(func.sum(Event.properties["total"].as_float()), literal(0.0)))
            .where(measures.seen_events(), Event.name == PURCHASE).scalar_subquery())


def red_customers(connection: Connection, measures: Measures, limit: int = RED_LISTED) -> list[dict[str, Any]]:
    """The red-risk customers worth most, first: the list the team acts on."""
    value = customer_value(measures).label("value")
    last = measures.last_activity().label("last_activity")
    query = (select(Customer.external_id, Customer.email, Customer.first_name, Customer.last_name, value, last)
             .where(Customer.created_at <= measures.now, measures.risk("red"))
             .order_by(value.desc(), Customer.external_id).limit(limit))
    return [{"id": r.external_id, "email": r.email,
             "name": " ".join(p for p in (r.first_name, r.last_name) if p) or None,
             "value": round(float(r.value or 0), 2), "last_activity": r.last_activity.isoformat()}
            for r in connection.execute(query)]
