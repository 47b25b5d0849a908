"""What works: campaign figures, holdout lift, retention (CRR), stages and churn risk, counted in the
database. This is the one query layer behind `lifecycle report` (table, JSON, HTML) and `GET /dashboard`,
so the numbers agree everywhere (docs/campaigns.md "Stages and risk", docs/command-line.md `lifecycle report`).

Every figure is a GROUP BY or a conditional count in SQL: Python only folds the few grouped rows
into the report's dict, so the cost does not grow with the number of sends on the Python side.
In the database each part reads a tally, passes over an index or probes per rare row, never a join
of sends to provider events nor a subquery per send (bench/report_10m.py):
- send statuses and outcomes, and entries: the tallies the database keeps (engine/store/tallies.py),
  since each send carries its outcomes as bits (engine/delivery/outcomes.py); with `--since`, one ordered
  pass over `ix_send_figures`; the monthly series: range counts on time-ordered indexes;
- conversions: from each goal event to its customer's sends and entries in the window;
- customers: their facts (last activity now and at each month boundary, purchases, red events) grouped
  once per report into cells of customers alike, from which the rules of engine/campaigns/measures.py
  count stages, risk and retention; the red list is engine/insights/customers.py's list, red and cut short.

Choices where the contract is silent:
- `--since` keeps the entries that entered at or after it, with their sends and deliveries, in the
  campaign figures and the monthly activity alike. Retention, stages and risk describe the customers
  as of `now` and ignore it.
- Outcomes count distinct sends: a send opened three times is one `opened`. `bounced` is a bounce or a
  drop, `complained` a spam report. In the monthly activity an outcome counts in the month of its
  first provider event of that kind.
- The lift's treated group is the entries that got a send, that is whose first step was sent (the
  ledger schedules a step only after the one before it was sent).
- A campaign without a `goal` has `converted` 0, `goal` null and no lift.
- `paused` is the campaign's pause now (engine/delivery/pauses.py: reason, since, by) or null, whatever
  `--since`.
- Rates are percentages; the lift's `difference` is in percentage points.
- Months are calendar months in the config timezone, and the current month ends at `now`.
- Feedback counts each rated send once, with its latest `feedback_submitted` event by `now` (of the
  configured scale, with a score on it); a rating names its send, whose campaign it counts in, so
  `--campaign` and `--since` keep the ratings of the sends in scope. Only low ratings' acknowledgements
  count, the first of each. The response rate is responses / sent sends of the campaign, and
  campaigns without a rating are not listed. The low ratings are listed with or without a comment.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import SQLColumnExpression, and_, case, exists, func, literal, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import CTE, ScalarSelect, Subquery
from sqlmodel import col

from engine.campaigns.language import RISKS, STAGES, Campaign, Goal
from engine.campaigns.measures import Facts, Measures
from engine.config.durations import format_duration
from engine.config.settings import Config
from engine.delivery import pauses
from engine.delivery.outcomes import first_at, outcome_names
from engine.delivery.statuses import NOT_YET_OUT, SendStatus
from engine.errors import NotFound
from engine.insights.customers import red_list
from engine.store import tallies
from engine.store.dialect import InOrder, concurrent_reads, days_between, plan_for_index_probes, read_json, shifted
from engine.store.tables import OUTCOMES, Customer, Entry, Event, RiskModel, Send

# Send statuses are reported as they are, except those not yet out (scheduled, deferred, sending): `waiting`.
WAITING = "waiting"
SEND_FIGURES = (
    SendStatus.SENT,
    *OUTCOMES,
    SendStatus.FAILED,
    SendStatus.UNKNOWN,
    SendStatus.EXPIRED,
    SendStatus.HELD_OUT,
    WAITING,
)
NO_REASON = "unknown"  # what a skip without a reason is reported as
MONTHS = 12
CONFIDENCE = 0.95
Figures = dict[str, Any]  # a campaign's, or one of its steps': the report's JSON shape
StepKey = tuple[int, str | None]  # (step, variant)
Query = Select[*tuple[Any, ...]]
T = TypeVar("T")


@dataclass(frozen=True)
class Scope:
    """What the report covers: the moment it describes and the optional filters."""

    now: datetime
    since: datetime | None = None
    campaign: str | None = None


def build_report(
    engine: Engine,
    config: Config,
    campaigns: list[Campaign],
    now: datetime,
    since: datetime | None = None,
    campaign: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The whole report as plain data in the JSON shape of interfaces.md, plus `activity`,
    `red_customers` and each campaign's `goal`.

    The parts are independent reads. On PostgreSQL they run at once, each on a connection (a server
    process) of its own; under concurrent writes they may then see moments a few seconds apart, as
    any report of a live store does. On SQLite they run one after the other: two readers of one
    large file at once took longer than the two in turn (bench/report_10m.py)."""
    advance = progress or (lambda n: None)
    scope = Scope(now, since, campaign)
    months = month_starts(now, config.timezone)
    measures = Measures(config, now)
    parts: dict[str, Callable[[Connection], Any]] = {
        "campaigns": lambda c: campaign_figures(c, scope, {x.name: x for x in campaigns}, advance),
        "customers": lambda c: customer_counts(c, measures, months),
        "activity": lambda c: activity(c, scope, months, config.timezone),
        "red_customers": lambda c: red_list(c, config, now, config.report.red_list),
        "feedback": lambda c: feedback(c, scope, months, config.timezone, rating_scale(config)),
        "failures": lambda c: failure_reasons(c, scope),
        "risk_model": lambda c: risk_model(c, config),
    }
    with ThreadPoolExecutor(concurrent_reads(engine, len(parts))) as pool:
        running = {name: pool.submit(_on_connection, engine, part) for name, part in parts.items()}
        done = {name: future.result() for name, future in running.items()}
    advance(1)
    return {
        "now": now.isoformat(),
        "since": since.isoformat() if since else None,
        "campaigns": done["campaigns"],
        "activity": done["activity"],
        **done["customers"],
        "red_customers": done["red_customers"],
        "feedback": done["feedback"],
        "failures": done["failures"],
        "risk_rules": risk_rules(config),
        "risk_model": done["risk_model"],
    }


def _on_connection(engine: Engine, part: Callable[[Connection], T]) -> T:
    with report_connection(engine) as connection:
        return part(connection)


@contextmanager
def report_connection(engine: Engine) -> Iterator[Connection]:
    """A connection for the report's reads. On PostgreSQL its transaction prices an index probe
    near a sequential read (random_page_cost 1.1, the usual setting for a store on SSD or in
    memory), so that the conversions probe each goal event's customer instead of hashing every
    send, and compiles no query to machine code (JIT): compiling the monthly activity's 84 counts
    took longer than running them (bench/report_10m.py)."""
    with engine.connect() as connection:
        plan_for_index_probes(connection)
        yield connection


# -- campaigns -------------------------------------------------------------------------------------


def campaign_figures(
    connection: Connection, scope: Scope, campaigns: dict[str, Campaign], advance: Callable[[int], None]
) -> dict[str, Figures]:
    """Per campaign: entries, send statuses, outcomes and conversions, with a row per step and variant."""
    entries = _entry_counts(connection, scope)
    names = sorted(set(campaigns) | set(entries))
    if scope.campaign is not None:
        if scope.campaign not in names:
            raise NotFound(f"no campaign named '{scope.campaign}' (known: {', '.join(names) or 'none'})")
        names = [scope.campaign]
    steps = _step_rows(connection, scope)
    goals = {name: goal for name in names if name in campaigns and (goal := campaigns[name].goal)}
    converted_sends, converted_entries, converted_variants = _conversions(connection, scope, goals)
    held = pauses.active(connection)
    result = {}
    for name in names:
        spec = campaigns.get(name)
        goal = goals.get(name)
        rows = steps.get(name, {})
        for (step, variant), converted in converted_sends.get(name, {}).items():
            rows.setdefault((step, variant), _empty_step(step, variant))["converted"] = converted
        entered, held_out = entries.get(name, (0, 0))
        groups = (
            {
                False: (_treated(rows), converted_entries.get((name, False), 0)),
                True: (held_out, converted_entries.get((name, True), 0)),
            }
            if goal
            else {}
        )
        result[name] = _campaign((entered, held_out), rows, goal, groups, holdout=bool(spec and spec.holdout))
        result[name]["paused"] = held[name].as_dict() if name in held else None
        result[name]["variants"] = _variants(rows, converted_variants.get(name, {})) if goal else []
        advance(1)
    return result


def _campaign(
    entered_held: tuple[int, int],
    rows: dict[StepKey, Figures],
    goal: Goal | None,
    groups: dict[bool, tuple[int, int]],
    holdout: bool,
) -> dict[str, Any]:
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


def _variants(rows: dict[StepKey, Figures], converted: dict[str | None, int]) -> list[dict[str, Any]]:
    """An A/B first step's variants: the entries each went to, and those that converted (after the
    entry, as the campaign's `converted` counts them). A campaign without variants has none."""
    return [
        {
            "variant": variant,
            "entries": row[SendStatus.SENT],
            "converted": converted.get(variant, 0),
            "rate": _rate(converted.get(variant, 0), row[SendStatus.SENT]),
        }
        for (step, variant), row in sorted(rows.items(), key=lambda item: str(item[0][1]))
        if step == 1 and variant is not None
    ]


def _empty_step(step: int, variant: str | None) -> dict[str, Any]:
    return {"step": step, "variant": variant, **dict.fromkeys(SEND_FIGURES, 0), "skipped": {}, "converted": 0}


def _entries(query: Query, scope: Scope) -> Query:
    """Entries in scope: the campaign asked for and those entered since `--since`."""
    if scope.campaign is not None:
        query = query.where(col(Entry.campaign) == scope.campaign)
    if scope.since is not None:
        query = query.where(col(Entry.entered_at) >= scope.since)
    return query


def _sends(query: Query, scope: Scope) -> Query:
    """Sends in scope: those of the entries in scope (the join only when `--since` needs it)."""
    if scope.campaign is not None:
        query = query.where(col(Send.campaign) == scope.campaign)
    if scope.since is not None:
        query = query.join(Entry, col(Entry.id) == col(Send.entry_id)).where(col(Entry.entered_at) >= scope.since)
    return query


def _entry_counts(connection: Connection, scope: Scope) -> dict[str, tuple[int, int]]:
    """(entered, held out) per campaign: from the tallies, or with `--since` from the entries."""
    if scope.since is None:
        return tallies.entry_counts(connection, scope.campaign)
    query = _entries(
        select(col(Entry.campaign), func.count(), func.count(case((col(Entry.held_out), 1)))).group_by(
            col(Entry.campaign)
        ),
        scope,
    )
    return {name: (entered, held) for name, entered, held in connection.execute(query)}


def _send_counts(connection: Connection, scope: Scope) -> Sequence[Sequence[Any]]:
    """(status, campaign, step, variant, outcomes, reason, sends) for the sends in scope: from the
    tallies, or with `--since` from the sends, grouped in the order of the index `ix_send_figures`
    (one ordered pass over the index, never a sort). Only a skip's reason is reported."""
    if scope.since is None:
        return tallies.send_counts(connection, scope.campaign)
    keys = (
        col(Send.status),
        col(Send.campaign),
        col(Send.step),
        col(Send.variant),
        col(Send.outcomes),
        col(Send.reason),
    )
    return connection.execute(_sends(select(*keys, func.count()).group_by(*keys), scope)).all()


def _step_rows(connection: Connection, scope: Scope) -> dict[str, dict[StepKey, Figures]]:
    """Per campaign, a row per (step, variant) with send statuses, outcomes and skip reasons."""
    rows: dict[str, dict[StepKey, Figures]] = {}
    for state, name, step, variant, mask, reason, n in _send_counts(connection, scope):
        target = rows.setdefault(name, {}).setdefault((step, variant), _empty_step(step, variant))
        figure = WAITING if state in NOT_YET_OUT else state
        if figure in SEND_FIGURES:
            target[figure] += n
        elif state == SendStatus.SKIPPED:
            target["skipped"][reason or NO_REASON] = target["skipped"].get(reason or NO_REASON, 0) + n
        for outcome in outcome_names(mask):
            target[outcome] += n
    for by_step in rows.values():
        for target in by_step.values():
            target["skipped"] = dict(sorted(target["skipped"].items()))
    return rows


def failure_reasons(connection: Connection, scope: Scope) -> list[dict[str, Any]]:
    """Sends that failed, or whose fate is unknown, by campaign and reason, the most frequent first."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for state, name, _, _, _, reason, n in _send_counts(connection, scope):
        if state in (SendStatus.FAILED, SendStatus.UNKNOWN):
            counts[(name, str(state), reason or NO_REASON)] += n
    return [
        {"campaign": name, "status": state, "reason": reason, "sends": n}
        for (name, state, reason), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        if n
    ]


def _conversions(
    connection: Connection, scope: Scope, goals: dict[str, Goal]
) -> tuple[dict[str, dict[StepKey, int]], dict[tuple[str, bool], int], dict[str, dict[str | None, int]]]:
    """Conversions, driven from the goal events (far fewer than sends and entries): per campaign, the
    sent sends per (step, variant), and the entries held out (True) or that got a send (False), whose
    customer did the goal event within its window after the send or the entry, by `now`; and the
    entries that got a send and converted by the variant of their first step, which add up to the
    campaign's (so an A/B campaign's conversions are each variant's plus the held-out ones). Campaigns
    with the same goal share one query; each goal event probes its customer's sends and entries
    through the indexes on (customer, time), whatever their campaign; a row reached by several goal
    events counts once (`DISTINCT`), and other campaigns' rows are dropped here."""
    sends: dict[str, dict[StepKey, int]] = defaultdict(dict)
    entries: dict[tuple[str, bool], int] = {}
    variants: dict[str, dict[str | None, int]] = defaultdict(dict)
    by_goal: dict[tuple[str, timedelta], set[str]] = defaultdict(set)
    for name, goal in goals.items():
        by_goal[(goal.event, goal.within)].add(name)
    for (event, within), names in by_goal.items():
        happened = _goal_events(event, scope.now, scope.since, names)
        keys = (col(Send.campaign), col(Send.step), col(Send.variant))
        converted = _sends(
            select(*keys, func.count(col(Send.id).distinct()))
            .select_from(InOrder(happened, Send, _reached(happened, col(Send.customer_id), col(Send.sent_at), within)))
            .where(col(Send.status) == SendStatus.SENT)
            .group_by(*keys),
            scope,
        )
        for name, step, variant, n in connection.execute(converted):
            if name in names:
                sends[name][(step, variant)] = n
        first = aliased(Send)
        first_sent = (col(first.entry_id) == col(Entry.id), col(first.step) == 1, col(first.status) == SendStatus.SENT)
        got_send = exists(select(col(first.id)).where(*first_sent))
        first_variant = select(col(first.variant)).where(*first_sent).limit(1).scalar_subquery()
        converted = _entries(
            select(col(Entry.campaign), col(Entry.held_out), first_variant, func.count(col(Entry.id).distinct()))
            .select_from(
                InOrder(happened, Entry, _reached(happened, col(Entry.customer_id), col(Entry.entered_at), within))
            )
            .where(or_(col(Entry.held_out), got_send))
            .group_by(col(Entry.campaign), col(Entry.held_out), first_variant),
            scope,
        )
        for name, held, variant, n in connection.execute(converted):
            if name in names:
                entries[(name, bool(held))] = entries.get((name, bool(held)), 0) + n
                if not held:
                    variants[name][variant or None] = n
    return sends, entries, variants


def _goal_events(name: str, now: datetime, since: datetime | None, campaigns: set[str]) -> CTE:
    """The goal events done by `now`, gathered first and in customer order, so that the probes of
    each customer's sends and entries that follow (`InOrder`) land on neighbouring pages of their
    indexes; taken in time order, each probe jumped across the whole index (1 s against 2.5 s a
    query at 10,000,000 sends, bench/report_10m.py). SQLite is told which index gives that order,
    since it drops an ORDER BY that nothing outside the CTE asks for. With `since`, only the events
    after it of the customers who entered one of the `campaigns` since: a conversion follows its
    entry or send, and those in scope begin at or after `since`. Their customers are probed in the
    index one by one instead of reading it all (10,000,000 events), so the last 30 days of a store
    whose campaigns entered few customers in them take milliseconds (bench/studio_1m.py)."""
    happened = and_(col(Event.name) == name, col(Event.at) <= now)
    if since is not None:
        entered = select(col(Entry.customer_id)).where(
            col(Entry.campaign).in_(campaigns), col(Entry.entered_at) >= since
        )
        happened = and_(happened, col(Event.at) > since, col(Event.customer_id).in_(entered))
    return (
        select(col(Event.customer_id), col(Event.at))
        .where(happened)
        .order_by(col(Event.customer_id))
        .with_hint(Event, "INDEXED BY ix_event_customer_name_at", "sqlite")
        .cte("goals")
        .prefix_with("MATERIALIZED")
    )


def _reached(
    goals: CTE, customer_id: SQLColumnExpression[Any], start: SQLColumnExpression[Any], within: timedelta
) -> ColumnElement[bool]:
    """A goal event of the customer after `start` and within the window, the window's end written
    from the event's side, so that both bounds narrow the probe of an index on (customer, start)."""
    return and_(goals.c.customer_id == customer_id, goals.c.at > start, start >= shifted(goals.c.at, -within))


def _treated(rows: dict[StepKey, Figures]) -> int:
    """The entries that got a send: those whose first step was sent, since the ledger schedules a
    step only once the one before it was sent (engine/delivery/tick.py)."""
    return sum(row[SendStatus.SENT] for (step, _), row in rows.items() if step == 1)


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
        "difference": None,
        "ci_low": None,
        "ci_high": None,
        "relative": None,
        "p_value": None,
        "confidence": CONFIDENCE,
    }
    if not (n_t and n_h):
        return result
    # Imported here: statsmodels (with scipy and pandas) takes seconds to import, and every
    # command that prints a table would pay for it.
    import numpy
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    with numpy.errstate(all="ignore"):
        low, high = confint_proportions_2indep(c_t, n_t, c_h, n_h, compare="diff", alpha=1 - CONFIDENCE)
        p_value = test_proportions_2indep(c_t, n_t, c_h, n_h, compare="diff").pvalue
    share_t, share_h = c_t / n_t, c_h / n_h
    result.update(
        difference=round(100 * (share_t - share_h), 2),
        ci_low=round(100 * float(low), 2),
        ci_high=round(100 * float(high), 2),
        p_value=_number(p_value, 4),
        relative=round(100 * (share_t - share_h) / share_h, 2) if share_h else None,
    )
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


def activity(connection: Connection, scope: Scope, months: list[datetime], timezone: str) -> list[dict[str, Any]]:
    """Sends that went out, and each outcome by the month of its first provider event, per month of
    the last 12 (for the dashboard's chart): range counts on indexes in time order."""
    times = {SendStatus.SENT: col(Send.sent_at), **{outcome: first_at(outcome) for outcome in OUTCOMES}}
    counts = [
        _count_between(figure, column, start, end, scope)
        for figure, column in times.items()
        for start, end in pairwise(months)
    ]
    values = iter(connection.execute(select(*counts)).one())
    series = [{"month": _label(start, timezone)} for start in months[:-1]]
    for figure in times:
        for month in series:
            month[figure] = next(values)
    return series


def _count_between(
    figure: str, column: SQLColumnExpression[Any], start: datetime, end: datetime, scope: Scope
) -> ScalarSelect[int]:
    query = select(func.count()).select_from(Send).where(column >= start, column < end)
    if figure == SendStatus.SENT:
        query = query.where(col(Send.status) == SendStatus.SENT)
    return _sends(query, scope).scalar_subquery()


# -- customers -------------------------------------------------------------------------------------


def customer_counts(connection: Connection, measures: Measures, months: list[datetime]) -> dict[str, Any]:
    """Retention, stages and risk, counted in cells of customers alike in every comparison they make:
    created between the same two month boundaries, counted at the same month boundaries, last
    active between the same two of the instants the rules compare last activity with, with the
    same count of recent purchases, and alike in having purchased and in having a red event. The
    database puts each customer in a cell in one pass over the customers and their events, and
    decides stage and risk once a cell, from its latest last activity; Python adds up the few
    hundred cells. (Deciding them for every customer, then grouping, took about 40% longer at
    1,000,000 customers.)

    Retention is point in time: whether a customer is counted at a month boundary is decided from
    their events stamped by that boundary only (`Measures.counted`), so a past month's row is the
    same in every report run after it."""
    bounds = [*months[:-1], min(months[-1], measures.now)]
    at, lost = col(Event.at), measures.config.stages.lost.inactive_for
    # at each month's start, the events within the lost window before it, counted; at the end of the
    # current month, `now`, the last activity of the rules. (FILTER was about 15% quicker than CASE.)
    customers = measures.per_customer(
        func.min(at).label("first_seen"),
        *(
            func.count().filter(at > bound - lost, at <= bound).label(f"active_{k}")
            for k, bound in enumerate(bounds[:-1])
        ),
    )
    facts = Measures.grouped(customers)
    created = customers.c.created_at
    counted = [
        *(
            _counted_at(bound, lost, created, customers.c[f"active_{k}"], customers.c.first_seen)
            for k, bound in enumerate(bounds[:-1])
        ),
        measures.counted(bounds[-1], created, facts.last_activity),
    ]
    each = select(
        # how many boundaries the customer was created after, at which boundaries they were counted, and
        # how many limits they were active after
        _passed(customers.c.created_at, operator.gt, bounds).label("born"),
        sum((case((c, 1 << k), else_=0) for k, c in enumerate(counted)), literal(0)).label("counted"),
        _passed(facts.last_activity, operator.gt, sorted(measures.activity_limits())).label("active"),
        facts.recent_purchases.label("recent"),
        facts.purchased.label("purchased"),
        facts.red_event.label("red_event"),
        facts.last_activity.label("last_activity"),
        *([facts.predicted.label("predicted")] if facts.predicted is not None else []),
    ).subquery()
    predicted = [each.c.predicted] if facts.predicted is not None else []
    keys = (each.c.born, each.c.counted, each.c.active, each.c.recent, each.c.purchased, each.c.red_event, *predicted)
    cells = (
        select(*keys, func.max(each.c.last_activity).label("last_activity"), func.count().label("customers"))
        .group_by(*keys)
        .subquery()
    )
    alike = Facts(
        last_activity=cells.c.last_activity,
        recent_purchases=cells.c.recent,
        purchased=cells.c.purchased,
        red_event=cells.c.red_event,
        predicted=cells.c.predicted if predicted else None,
    )
    decided = select(
        cells.c.born, cells.c.counted, measures.stage_of(facts=alike), measures.risk_of(facts=alike), cells.c.customers
    )
    rows = [Retained() for _ in range(MONTHS)]
    stages, risks = dict.fromkeys(STAGES, 0), dict.fromkeys(RISKS, 0)
    for born, mask, stage, risk, n in connection.execute(decided):
        for i, row in enumerate(rows):
            row.add(born > i, bool(mask >> i & 1), bool(mask >> (i + 1) & 1), n)
        stages[stage] += n
        risks[risk] += n
    timezone = measures.config.timezone
    return {
        "retention": [
            {"month": _label(start, timezone), **row.figures()} for start, row in zip(months[:-1], rows, strict=True)
        ],
        "stages": stages,
        "risk": risks,
    }


def _counted_at(
    bound: datetime,
    lost: timedelta,
    created: ColumnElement[datetime],
    active: ColumnElement[int],
    first_seen: ColumnElement[datetime],
) -> ColumnElement[bool]:
    """`Measures.counted` at `bound`, from the count of events in the lost window before it instead
    of the last activity as of it: the last activity is within the window when an event is, and is
    `created_at` (within the window or not) when no event came by then. The same answer; but
    `max(at)` as of each of 12 boundaries copied a text timestamp per event and boundary on SQLite,
    which made retention 3x slower than a count (bench/customers_1m.py)."""
    no_event_yet = or_(first_seen.is_(None), first_seen > bound)
    return and_(created <= bound, or_(active > 0, and_(created > bound - lost, no_event_yet)))


@dataclass
class Retained:
    """One month's retention: S, E, and those counted at the end but not at the start, new (created
    in the month) or returning (created before it: they had been lost and came back)."""

    start: int = 0
    end: int = 0
    new: int = 0
    returning: int = 0

    def add(self, created_in_month: bool, at_start: bool, at_end: bool, customers: int) -> None:
        self.start += customers * at_start
        self.end += customers * at_end
        if at_end and not at_start:
            if created_in_month:
                self.new += customers
            else:
                self.returning += customers

    def figures(self) -> dict[str, Any]:
        """CRR = ((E − N) / S) × 100 with N = new + returning: the share of the month's starting customers
        still counted at its end, so never above 100; null when S is 0."""  # noqa: RUF002 (the formula as written)
        stayed = self.end - self.new - self.returning
        return {
            "start": self.start,
            "end": self.end,
            "new": self.new,
            "returning": self.returning,
            "crr": round(100 * stayed / self.start, 2) if self.start else None,
        }


def _passed(column: ColumnElement[Any], past: Callable[[Any, Any], Any], points: list[datetime]) -> ColumnElement[int]:
    """How many of the ascending `points` the column is `past` (>= or >): a binary search written as
    nested CASEs, a handful of comparisons a row instead of one per point."""
    if not points:
        return literal(0)
    middle = len(points) // 2
    return case(
        (past(column, points[middle]), middle + 1 + _passed(column, past, points[middle + 1 :])),
        else_=_passed(column, past, points[:middle]),
    )


# -- feedback --------------------------------------------------------------------------------------

RATED = "feedback_submitted"
ACKNOWLEDGED = "alert_acknowledged"
MINUTES_A_DAY = 1440
ANSWER_WITHIN = timedelta(hours=4)  # the promise to a customer who gave a low score
LOW_LISTED = 50


@dataclass(frozen=True)
class RatingScale:
    """CSAT (scores 1-5) or NPS (0-10), and the score at or below which a rating is low."""

    scale: int
    low: int

    @property
    def scores(self) -> range:
        return range(1, 6) if self.scale == 5 else range(11)


def rating_scale(config: Config) -> RatingScale:
    """The config's `feedback: {scale, low}` (config fills in the default low: 2 of 5, 6 of 10)."""
    low = config.feedback.low
    return RatingScale(config.feedback.scale, 2 if low is None else low)


@dataclass
class _Ratings:
    """The ratings of one group (all, a month, a campaign), folded from the grouped rows."""

    scores: Counter[int] = field(default_factory=Counter)
    acknowledged: int = 0
    within: int = 0
    minutes: list[float] = field(default_factory=list)


def feedback(
    connection: Connection, scope: Scope, months: list[datetime], timezone: str, scale: RatingScale
) -> dict[str, Any]:
    """Ratings and the team's answers to the low ones: in all, per month of the last 12 (by the
    rating's time) and per campaign, with the low ratings newest first for review. The database
    groups the latest rating of each send by month, campaign, score and time to acknowledge (only
    acknowledged low ratings have one, and they are few); Python adds up the groups."""
    rated = _rated_sends(scope, scale)
    acknowledged = _acknowledgements(scope.now)
    low = rated.c.score <= scale.low
    acked_at = case((low, acknowledged.c.at))
    within = case((acked_at <= shifted(acknowledged.c.raised_at, ANSWER_WITHIN), 1), else_=0)
    keys = (
        _passed(rated.c.at, operator.ge, months).label("month"),
        rated.c.campaign,
        rated.c.score,
        within,
        days_between(acknowledged.c.raised_at, acked_at) * MINUTES_A_DAY,
    )
    grouped = (
        select(*keys, func.count())
        .select_from(rated.outerjoin(acknowledged, acknowledged.c.send_id == rated.c.send_id))
        .group_by(*keys)
    )
    total = _Ratings()
    by_month: defaultdict[int, _Ratings] = defaultdict(_Ratings)
    by_campaign: defaultdict[str, _Ratings] = defaultdict(_Ratings)
    for month, campaign, score, in_time, minutes, n in connection.execute(grouped):
        for group in (total, by_month[month], by_campaign[campaign]):
            group.scores[int(score)] += n
            if minutes is not None:
                group.acknowledged += n
                group.within += in_time * n
                group.minutes += [float(minutes)] * n
    sent = _sent_by_campaign(connection, scope)
    return {
        **_rating_figures(total, scale),
        "months": [
            {"month": _label(start, timezone), **_rating_figures(by_month[i + 1], scale)}
            for i, start in enumerate(months[:-1])
        ],
        "campaigns": {
            name: {**_rating_figures(group, scale), "response_rate": _rate(sum(group.scores.values()), sent[name])}
            for name, group in sorted(by_campaign.items())
        },
        "low_comments": _low_ratings(connection, rated, acknowledged, low),
    }


def _rated_sends(scope: Scope, scale: RatingScale) -> Subquery:
    """The latest rating by `now` of each rated send in scope, on the configured scale, with its
    send's campaign. A rating without a send, or with a score off the scale, is none."""
    properties = col(Event.properties)

    def number(name: str) -> ColumnElement[float]:
        return read_json(properties, properties[name].as_float())

    send_id = number("send_id")
    newest = func.row_number().over(partition_by=send_id, order_by=(col(Event.at).desc(), col(Event.id).desc()))
    ratings = (
        select(
            col(Event.id),
            col(Event.customer_id),
            col(Event.at),
            send_id.label("send_id"),
            number("score").label("score"),
            read_json(properties, properties["comment"].as_string()).label("comment"),
            newest.label("newest"),
        )
        .where(
            col(Event.name) == RATED,
            col(Event.at) <= scope.now,
            send_id.is_not(None),
            number("score").in_([float(s) for s in scale.scores]),
            func.coalesce(number("scale"), scale.scale) == scale.scale,
        )
        .subquery()
    )
    latest = (
        select(*(c for c in ratings.c if c.name != "newest"), col(Send.campaign))
        .select_from(ratings)
        .join(Send, col(Send.id) == ratings.c.send_id)
        .where(ratings.c.newest == 1)
    )
    return _sends(latest, scope).subquery()


def _acknowledgements(now: datetime) -> Subquery:
    """Each rated send's first acknowledgement by `now`, with the time of the rating it answered: the
    alert is about the send's first low rating, so a comment or a new score added since changes neither."""
    properties = col(Event.properties)
    send_id = read_json(properties, properties["feedback_send_id"].as_float())
    rating_id = read_json(properties, properties["feedback_event_id"].as_float())
    rating = aliased(Event)
    return (
        select(send_id.label("send_id"), func.min(col(Event.at)).label("at"), func.min(rating.at).label("raised_at"))
        .join(rating, col(rating.id) == rating_id)
        .where(col(Event.name) == ACKNOWLEDGED, col(Event.at) <= now, send_id.is_not(None))
        .group_by(send_id)
        .subquery()
    )


def _sent_by_campaign(connection: Connection, scope: Scope) -> Counter[str]:
    sent: Counter[str] = Counter()
    for state, name, *_, n in _send_counts(connection, scope):
        if state == SendStatus.SENT:
            sent[name] += n
    return sent


def _rating_figures(ratings: _Ratings, scale: RatingScale) -> dict[str, Any]:
    scores = ratings.scores
    responses = sum(scores.values())
    low = sum(n for score, n in scores.items() if score <= scale.low)
    promoters = sum(n for score, n in scores.items() if score >= 9)
    detractors = sum(n for score, n in scores.items() if score <= 6)
    return {
        "responses": responses,
        "low": low,
        "acknowledged": ratings.acknowledged,
        "acknowledged_within_4h": ratings.within,
        "acknowledged_within_4h_share": _rate(ratings.within, low),
        "median_minutes_to_ack": round(statistics.median(ratings.minutes), 1) if ratings.minutes else None,
        "csat": _rate(scores[4] + scores[5], responses) if scale.scale == 5 else None,
        "nps": _rate(promoters - detractors, responses) if scale.scale == 10 else None,
        "scores": {str(score): scores[score] for score in scale.scores},
    }


def _low_ratings(
    connection: Connection, rated: Subquery, acknowledged: Subquery, low: ColumnElement[bool]
) -> list[dict[str, Any]]:
    """The latest low ratings, newest first, with their comments, for the team to review."""
    query = (
        select(
            col(Customer.external_id), rated.c.score, rated.c.comment, rated.c.at, rated.c.campaign, acknowledged.c.at
        )
        .select_from(rated)
        .join(Customer, col(Customer.id) == rated.c.customer_id)
        .outerjoin(acknowledged, acknowledged.c.send_id == rated.c.send_id)
        .where(low)
        .order_by(rated.c.at.desc(), rated.c.id.desc())
        .limit(LOW_LISTED)
    )
    return [
        {
            "customer": customer,
            "score": int(score),
            "comment": comment,
            "at": at.isoformat(),
            "campaign": campaign,
            "acknowledged_at": acked.isoformat() if acked else None,
        }
        for customer, score, comment, at, campaign, acked in connection.execute(query)
    ]


def risk_rules(config: Config) -> dict[str, Any]:
    """The rules' thresholds in force and where they come from: the config, the store's calibration
    (engine/customers/risk/calibration.py) or the defaults."""
    risk = config.risk

    def source(colour: Literal["yellow", "red"]) -> str:
        return "config" if risk.explicit(colour) else "calibrated" if risk.calibrated else "default"

    return {
        "model": risk.model,
        "yellow": {"inactive_for": format_duration(risk.inactive_for("yellow")), "source": source("yellow")},
        "red": {"inactive_for": format_duration(risk.inactive_for("red")), "source": source("red")},
    }


def risk_model(connection: Connection, config: Config) -> dict[str, Any] | None:
    """The latest trained churn model's backtest (`lifecycle risk train`): its AUC next to the rules'
    and recency's on the same store, and the share of each colour that bought again. None when no
    model was trained."""
    row = connection.execute(
        select(col(RiskModel.version), col(RiskModel.trained_at), col(RiskModel.data_until), col(RiskModel.metrics))
        .where(col(RiskModel.model).is_not(None))
        .order_by(col(RiskModel.version).desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    version, trained_at, data_until, metrics = row
    return {"version": version, "trained_at": trained_at.isoformat(), "data_until": data_until.isoformat(), **metrics}
